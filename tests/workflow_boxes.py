"""Node and group boxes of a ComfyUI UI workflow, and what is wrong with their layout (shared by the JSON layout
test and the browser test, which feeds it the boxes the page really draws)."""

from __future__ import annotations

NODE_TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar sits above a node's pos
GROUP_TITLE_FACTOR = 1.4  # LGraphGroup.titleHeight = font_size * 1.4


def node_boxes(workflow: dict, title_height: float = NODE_TITLE_HEIGHT) -> dict[str, tuple[float, float, float, float]]:
    """(left, top, right, bottom) per node, title bar included, keyed by a readable name."""
    boxes = {}
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        boxes[f"{node['id']} {node.get('title') or node['type']}"] = (x, y - title_height, x + w, y + h)
    return boxes


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlapping_pairs(boxes: dict) -> list[tuple[str, str]]:
    names = sorted(boxes)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if overlap(boxes[a], boxes[b])]


def group_problems(workflow: dict, boxes: dict) -> list[str]:
    """Nodes that stick out of the group they belong to (the frontend's rule: the group holds the node's centre)
    or reach into another group, and groups that hold no node."""
    problems = []
    for group in workflow.get("groups", []):
        gx, gy, gw, gh = group["bounding"]
        area = (gx, gy + group.get("font_size", 24) * GROUP_TITLE_FACTOR, gx + gw, gy + gh)
        members = 0
        for name, box in boxes.items():
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            if gx <= cx <= gx + gw and gy <= cy <= gy + gh:
                members += 1
                if not (area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]):
                    problems.append(f"node {name} {box} sticks out of group '{group['title']}' {area}")
            elif overlap(box, (gx, gy, gx + gw, gy + gh)):
                problems.append(f"node {name} reaches into group '{group['title']}'")
        if not members:
            problems.append(f"group '{group['title']}' holds no node")
    return problems
