// Keeps the message list at its newest message while the reader is there, and only then.
//
// Whether to follow is decided from what the reader does, not from where the list happens
// to be after a layout change. A scroll event at the position we set ourselves is ours and
// changes nothing (new content can land between our scroll and its event, so "near the
// bottom" measured then is wrong, issue 13). A scroll the reader made (a wheel, touch, key,
// focus move or scrollbar drag just before it) stops following unless it ends at the
// bottom. Any other scroll is the layout's: the browser clamping after content shrank, or
// scroll anchoring after content above the viewport grew while content below grew too. It
// never stops following (it did, under load, leaving a reply written below the visible
// area): the bottom is pinned again. Content growth (a new bubble, a streamed word, the
// list shrinking for a status line) re-pins the bottom while following.

/** A reader's scroll that ends this close to the bottom counts as "at the bottom". */
export const AT_BOTTOM_PX = 16;
const UP_KEYS = new Set(["ArrowUp", "PageUp", "Home"]);
/** A scroll this soon after a wheel, touch, key or focus move is the reader's. */
const INTENT_MS = 500;

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
    /** until when (performance.now()) a scroll is taken to be the reader's */
    this.intentUntil = 0;
    /** a pointer (or finger) is down on the list: its scrollbar may be being dragged */
    this.pressed = false;
    const view = list.ownerDocument.defaultView;
    const options = { signal, passive: true };
    const intent = () => { this.ours = null; this.intentUntil = now() + INTENT_MS; };
    list.addEventListener("scroll", () => this.onScroll(), options);
    list.addEventListener("wheel", (e) => {
      if (e.deltaY < 0 && list.scrollTop > 0) this.release(); // up: stop now, not a frame later
      intent();
    }, options);
    list.addEventListener("keydown", (e) => {
      if (UP_KEYS.has(e.key)) this.release();
      intent();
    }, options);
    list.addEventListener("focusin", intent, options); // the browser scrolls a focused button into view
    for (const name of ["touchstart", "pointerdown"]) {
      list.addEventListener(name, () => { this.pressed = true; intent(); }, options);
    }
    const lift = () => {
      if (!this.pressed) return; // a click elsewhere on the page says nothing about the list
      this.pressed = false;
      intent(); // the drag's last scroll events may still be on their way
    };
    for (const name of ["touchend", "touchcancel", "pointerup", "pointercancel"]) view?.addEventListener(name, lift, options);
    jump.addEventListener("click", () => this.jumpToLatest(), { signal });
    // The list's own size, and each message's: a bubble can grow with no node or text
    // added (a font arriving, a footer or a hover control shown by a style change).
    const resizes = view && "ResizeObserver" in view ? new view.ResizeObserver(() => this.schedule()) : null;
    if (resizes) {
      resizes.observe(list);
      signal.addEventListener("abort", () => resizes.disconnect(), { once: true });
    }
    if (view && "MutationObserver" in view) {
      const mutations = new view.MutationObserver((records) => {
        for (const record of records) {
          if (record.target !== list) continue;
          for (const node of record.addedNodes) if (node.nodeType === 1) resizes?.observe(/** @type {Element} */ (node));
          for (const node of record.removedNodes) if (node.nodeType === 1) resizes?.unobserve(/** @type {Element} */ (node));
        }
        this.schedule();
      });
      mutations.observe(list, { childList: true, subtree: true, characterData: true });
      signal.addEventListener("abort", () => mutations.disconnect(), { once: true });
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
    if (this.pressed || now() < this.intentUntil) {
      this.following = this.atBottom(); // the reader's
    } else if (this.following) {
      this.schedule(); // the layout's: back to the bottom
      return;
    } else if (this.atBottom()) {
      this.following = true;
    }
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

function now() {
  return globalThis.performance ? globalThis.performance.now() : Date.now();
}
