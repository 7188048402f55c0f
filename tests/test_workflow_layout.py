"""The shipped UI workflows open tidy: no node box (title bar included) covers another, and every group holds its
nodes whole. Read from the saved JSON; tests/test_browser.py checks the boxes the page really draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_boxes import group_problems, node_boxes, overlapping_pairs

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_no_two_nodes_overlap(path):
    assert overlapping_pairs(node_boxes(json.loads(path.read_text()))) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_groups_hold_their_nodes_whole_and_do_not_overlap(path):
    workflow = json.loads(path.read_text())
    assert group_problems(workflow, node_boxes(workflow)) == []
    groups = {
        g["title"]: (
            g["bounding"][0],
            g["bounding"][1],
            g["bounding"][0] + g["bounding"][2],
            g["bounding"][1] + g["bounding"][3],
        )
        for g in workflow.get("groups", [])
    }
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
        "groups": [
            {"title": "Picture and sound", "bounding": [-20, 600, 800, 400]},
            {"title": "Empty", "bounding": [2000, 0, 100, 100]},
        ],
    }
    boxes = node_boxes(workflow)
    assert overlapping_pairs(boxes) == [("6 AVSyncLoadAudio", "7 AVSyncImageBindLoader")]
    problems = group_problems(workflow, boxes)
    assert any("8 AVSyncEncodeAudio" in p and "sticks out" in p for p in problems)
    assert any("'Empty' holds no node" in p for p in problems)
