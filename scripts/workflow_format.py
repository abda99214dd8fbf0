"""Convert between ComfyUI's API prompt format and its UI workflow format (the JSON users save,
share and drop onto the canvas), using node definitions as /object_info reports them.

The UI format stores widget values positionally (``widgets_values``) in the order of the
node's inputs, with one extra value after every widget declared with
``control_after_generate`` (the "fixed"/"randomize" choice); linked inputs are listed in
``inputs`` with a link id. ``ui_to_api`` reverses that; ``api_to_ui`` writes it.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _spec(info: dict, name: str):
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return info["input"][section][name]
    raise KeyError(name)


def _ordered_inputs(info: dict) -> list[str]:
    order = info.get("input_order", {})
    return [*order.get("required", []), *order.get("optional", [])]


def is_widget(spec) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control(spec) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(opts.get("control_after_generate"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI workflow -> an API prompt (muted/bypassed nodes and notes are left out)."""
    links = {l[0]: l for l in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0 or node["type"] not in object_info:
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: i.get("link") for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name in _ordered_inputs(info):
            spec = _spec(info, name)
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
                if is_widget(spec):  # a widget converted to an input still keeps its value slot
                    values.pop(0) if values else None
                    if _has_control(spec) and values:
                        values.pop(0)
                continue
            if is_widget(spec) and values:
                inputs[name] = values.pop(0)
                if _has_control(spec) and values:
                    values.pop(0)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def api_to_ui(prompt: dict, object_info: dict, positions: dict | None = None, titles: dict | None = None,
              control: str = "fixed", groups: list | None = None) -> dict:
    """An API prompt -> a UI workflow. Node ids must be integers written as strings."""
    positions = positions or {}
    titles = titles or {}
    ids = sorted(prompt, key=int)
    links, nodes = [], []
    link_id = 0
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in ids:
        for name, value in prompt[nid]["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id += 1
                src, slot = value
                out_type = object_info[prompt[src]["class_type"]]["output"][slot]
                links.append([link_id, int(src), slot, int(nid), None, out_type, name])
                out_links.setdefault((src, slot), []).append(link_id)
    for order, nid in enumerate(ids):
        node = prompt[nid]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name in _ordered_inputs(info):
            spec = _spec(info, name)
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            if linked or not is_widget(spec):
                if linked:
                    lid = next(l[0] for l in links if l[3] == int(nid) and l[6] == name)
                else:
                    lid = None
                entry = {"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": lid}
                if linked and is_widget(spec):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
                if not linked:
                    continue
            if is_widget(spec):
                default = spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None
                if default is None and isinstance(spec[0], list) and spec[0]:
                    default = spec[0][0]
                widgets.append(value if not linked and value is not None else default)
                if _has_control(spec):
                    widgets.append(control)
        for slot_pos, entry in enumerate(inputs):
            if entry["link"] is not None:
                for l in links:
                    if l[0] == entry["link"]:
                        l[4] = slot_pos
        outputs = [
            {"name": (info.get("output_name") or info["output"])[i], "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
            for i, t in enumerate(info["output"])
        ]
        x, y = positions.get(nid, (80 + 360 * (order % 5), 80 + 420 * (order // 5)))
        entry = {
            "id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [320, 200], "flags": {}, "order": order,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        }
        if nid in titles:
            entry["title"] = titles[nid]
        nodes.append(entry)
    return {
        "last_node_id": max(int(i) for i in ids), "last_link_id": link_id, "nodes": nodes,
        "links": [l[:6] for l in links], "groups": groups or [], "config": {}, "extra": {}, "version": 0.4,
    }
