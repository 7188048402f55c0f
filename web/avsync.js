// AVSync pack, page side: AVSync Load Audio gets core Load Audio's player and upload button.
//
// The node declares `audio_upload: true`, so the frontend's own Comfy.UploadAudio adds the upload button (and
// drag-and-drop / paste). That button drives a player widget ("audioUI", type AUDIO_UI) which the frontend
// gives only to core audio nodes, so this extension declares it for our node, just before the button, which
// looks it up when it is created. When the player cannot load the chosen file (say a text file was uploaded),
// the node says so in red and a notification tells what to do; a file missing from the input folder (a
// shared workflow's placeholder name) is left to ComfyUI's own "file not found" check on Run.
//
// The red line is a DOM widget, added while the file cannot be played and removed once a playable one is chosen:
// the classic LiteGraph canvas and the Nodes 2.0 renderer (Comfy.VueNodes.Enabled, where nodes are page elements
// and nothing drawn on the canvas shows inside them) both show DOM widgets.
import { app } from "../../scripts/app.js";

const NODE = "AVSyncLoadAudio";
const HINT = "avsyncHint";

function hintWidget(node) {
  return node.widgets?.find((w) => w.name === HINT);
}

function showHint(node, text) {
  let widget = hintWidget(node);
  if (!widget) {
    const element = document.createElement("div");
    element.className = "avsync-hint";
    element.style.cssText =
      "color:#ff6b6b;font:12px sans-serif;line-height:16px;padding:0 10px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis";
    widget = node.addDOMWidget(HINT, "avsync_hint", element, {
      serialize: false, // neither in the prompt nor in the saved workflow
      hideOnZoom: false,
      margin: 2, // the classic canvas gives the element the widget's height less twice this
      getMinHeight: () => 20,
      getMaxHeight: () => 20,
    });
    widget.serialize = false;
    node.avsyncSizeBeforeHint = [...node.size];
    node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  }
  widget.element.textContent = text;
  widget.element.title = text;
}

function clearHint(node) {
  const widget = hintWidget(node);
  if (!widget) return;
  node.removeWidget(widget);
  if (node.avsyncSizeBeforeHint) node.setSize([node.size[0], node.avsyncSizeBeforeHint[1]]);
  node.avsyncSizeBeforeHint = null;
}

function showError(node, name) {
  node.avsyncAudioError = `Cannot play '${name}': not a sound?`;
  node.avsyncAudioErrorFile = name;
  showHint(node, node.avsyncAudioError);
  const detail = `The page cannot play '${name}': choose an audio file (wav, mp3, flac, ogg...) or a video with sound.`;
  app.extensionManager?.toast?.add({ severity: "error", summary: "AVSync Load Audio", detail, life: 10000 });
  node.setDirtyCanvas(true, true);
}

function clearError(node) {
  node.avsyncAudioError = null;
  node.avsyncAudioErrorFile = null;
  clearHint(node);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "AVSync.LoadAudio",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE || !nodeData.input?.required) return;
    const { upload, ...inputs } = nodeData.input.required;
    nodeData.input.required = { ...inputs, audioUI: ["AUDIO_UI", {}], ...(upload ? { upload } : {}) };
  },

  async nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    const audio = node.widgets?.find((w) => w.name === "audio");
    const player = node.widgets?.find((w) => w.name === "audioUI")?.element;
    if (!audio || !player) return;
    player.addEventListener("loadedmetadata", () => clearError(node));
    player.addEventListener("error", () => {
      const name = audio.value;
      if (!name || !player.getAttribute("src")) return;
      if (!audio.options.values.includes(name)) return; // not in the input folder: a placeholder, checked on Run
      showError(node, name);
    });
    const callback = audio.callback;
    audio.callback = function (value) {
      if (node.avsyncAudioErrorFile && value !== node.avsyncAudioErrorFile) clearError(node); // another file chosen
      return callback?.apply(this, arguments);
    };
  },
});
