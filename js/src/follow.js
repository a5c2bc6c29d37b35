// Keeps the message list at its newest message while the reader is there, and only then.
//
// Whether to follow is decided from what the reader does, not from where the list happens
// to be after a layout change: a scroll event at the position we set ourselves is ours and
// changes nothing (new content can land between our scroll and its event, so "near the
// bottom" measured then is wrong, issue 13); a wheel/touch/key scroll, a scrollbar drag or
// any scroll to a position we did not set is the reader's, and following resumes only when
// it ends at the bottom. Content growth (a new bubble, a streamed word, the list shrinking
// for a status line) re-pins the bottom while following.

/** A reader's scroll that ends this close to the bottom counts as "at the bottom". */
export const AT_BOTTOM_PX = 16;
const UP_KEYS = new Set(["ArrowUp", "PageUp", "Home"]);

export class ScrollFollower {
  /**
   * @param {HTMLElement} list     the scrolling message list
   * @param {HTMLElement} jump     the "jump to latest" control, shown while not following
   * @param {AbortSignal} signal   removes the listeners and observers
   */
  constructor(list, jump, signal) {
    this.list = list;
    this.jump = jump;
    this.following = true;
    /** @type {number | null} the scrollTop our last programmatic scroll produced */
    this.ours = null;
    this.frame = 0;
    const view = list.ownerDocument.defaultView;
    const options = { signal, passive: true };
    list.addEventListener("scroll", () => this.onScroll(), options);
    list.addEventListener("wheel", (e) => {
      if (e.deltaY < 0 && list.scrollTop > 0) this.release(); // up: stop now, not a frame later
      else this.ours = null;
    }, options);
    for (const name of ["touchstart", "pointerdown"]) list.addEventListener(name, () => { this.ours = null; }, options);
    list.addEventListener("keydown", (e) => {
      if (UP_KEYS.has(e.key)) this.release();
      else this.ours = null;
    }, options);
    jump.addEventListener("click", () => this.jumpToLatest(), { signal });
    if (view && "MutationObserver" in view) {
      const mutations = new view.MutationObserver(() => this.schedule());
      mutations.observe(list, { childList: true, subtree: true, characterData: true });
      signal.addEventListener("abort", () => mutations.disconnect(), { once: true });
    }
    if (view && "ResizeObserver" in view) {
      const resizes = new view.ResizeObserver(() => this.schedule());
      resizes.observe(list);
      signal.addEventListener("abort", () => resizes.disconnect(), { once: true });
    }
    signal.addEventListener("abort", () => view?.cancelAnimationFrame(this.frame), { once: true });
    this.updateJump();
  }

  atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.list;
    return scrollHeight - scrollTop - clientHeight <= AT_BOTTOM_PX;
  }

  onScroll() {
    const top = this.list.scrollTop;
    if (this.ours !== null && Math.abs(top - this.ours) <= 1) return; // our own scroll
    this.ours = null;
    this.following = this.atBottom();
    this.updateJump();
  }

  /** The reader scrolled up: stop following until they come back to the bottom. */
  release() {
    this.ours = null;
    this.following = false;
    this.updateJump();
  }

  /** Content changed: re-pin the bottom on the next frame while following. */
  schedule() {
    const view = this.list.ownerDocument.defaultView;
    if (!view || this.frame) return;
    this.frame = view.requestAnimationFrame(() => {
      this.frame = 0;
      if (this.following) this.stick();
      else this.updateJump();
    });
  }

  /** Called when a message's text was rendered (synchronously, so no frame shows a gap). */
  onRender() {
    if (this.following) this.stick();
    else this.updateJump();
  }

  stick() {
    const list = this.list;
    list.scrollTop = list.scrollHeight;
    this.ours = list.scrollTop;
    this.updateJump();
  }

  /** A new conversation was opened: follow from its end. */
  reset() {
    this.following = true;
    this.stick();
  }

  jumpToLatest() {
    this.following = true;
    this.stick();
  }

  updateJump() {
    const hide = this.following || this.atBottom();
    if (this.jump.hidden !== hide) this.jump.hidden = hide;
  }
}
