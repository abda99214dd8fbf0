// SurgUn front-end helper: shows each SurgUn node's text result (training summary, distractor
// preview, per-block table) in a read-only box on the node after it runs.
import { app } from "../../scripts/app.js";

const SHOWS_TEXT = new Set([
  "SurgUnTrain",
  "SurgUnDistractorBuilder",
  "SurgUnBlockLocalizer",
  "SurgUnEraseRetainCompare",
]);

function showText(node, lines) {
  const text = Array.isArray(lines) ? lines.join("\n") : String(lines ?? "");
  let widget = node.widgets?.find((w) => w.name === "surgun_result");
  if (!widget) {
    const made = app.widgets?.STRING?.(node, "surgun_result", ["STRING", { multiline: true }], app);
    widget = made?.widget;
    if (!widget) return;
    widget.serialize = false; // a result, not an input: never saved into the workflow's values
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = 0.75;
    }
  }
  widget.value = text;
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "SurgUn.ResultText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!SHOWS_TEXT.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text) showText(this, message.text);
    };
  },
});
