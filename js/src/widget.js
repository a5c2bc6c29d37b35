// r3nb chat panel: the anywidget entry point.
//
// Python (r3nb/kernel/panel.py) sets the traits read here: api_base, mode, conversation_id
// (shared both ways), kernel_id, snapshot_interval, idle_interval, default_model.
// Each `render` builds an independent panel and returns its cleanup, which aborts every
// fetch, stops every timer and removes every model listener.

import { ChatPanel } from "./panel.js";

/**
 * @param {{ model: import("./panel.js").WidgetModel, el: HTMLElement }} context
 * @returns {() => void}
 */
function render({ model, el }) {
  const panel = new ChatPanel(model, el);
  void panel.start();
  return () => panel.dispose();
}

export default { render };
