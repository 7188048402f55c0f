"""The shipped UI workflows open tidy: no node box (title bar included) covers another, and every group holds its
nodes whole. Read from the saved JSON; tests/test_browser.py checks the boxes the page really draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
NODE_TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar sits above a node's pos
GROUP_TITLE_FACTOR = 1.4  # LGraphGroup.titleHeight = font_size * 1.4


def node_boxes(workflow: dict) -> dict[str, tuple[float, float, float, float]]:
    """(left, top, right, bottom) per node, title bar included, keyed by a readable name."""
    boxes = {}
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        boxes[f"{node['id']} {node.get('title') or node['type']}"] = (x, y - NODE_TITLE_HEIGHT, x + w, y + h)
    return boxes


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlapping_pairs(boxes: dict) -> list[tuple[str, str]]:
    names = sorted(boxes)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if overlap(boxes[a], boxes[b])]


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


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_no_two_nodes_overlap(path):
    assert overlapping_pairs(node_boxes(json.loads(path.read_text()))) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_groups_hold_their_nodes_whole_and_do_not_overlap(path):
    workflow = json.loads(path.read_text())
    assert group_problems(workflow, node_boxes(workflow)) == []
    groups = {g["title"]: (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                           g["bounding"][1] + g["bounding"][3]) for g in workflow.get("groups", [])}
    assert overlapping_pairs(groups) == []


def test_the_checks_see_the_overlap_this_layout_once_had():
    """Load ImageBind Audio Encoder drawn over AVSync Load Audio (sizes as the page renders them), a node half out
    of its group, and an empty group are all reported."""
    workflow = {
        "nodes": [
            {"id": 6, "type": "AVSyncLoadAudio", "pos": [0, 680], "size": [315, 204]},
            {"id": 7, "type": "AVSyncImageBindLoader", "pos": [0, 830], "size": [315, 58]},
            {"id": 8, "type": "AVSyncEncodeAudio", "pos": [600, 700], "size": [300, 150]},
        ],
        "groups": [{"title": "Picture and sound", "bounding": [-20, 600, 800, 400]},
                   {"title": "Empty", "bounding": [2000, 0, 100, 100]}],
    }
    boxes = node_boxes(workflow)
    assert overlapping_pairs(boxes) == [("6 AVSyncLoadAudio", "7 AVSyncImageBindLoader")]
    problems = group_problems(workflow, boxes)
    assert any("8 AVSyncEncodeAudio" in p and "sticks out" in p for p in problems)
    assert any("'Empty' holds no node" in p for p in problems)
