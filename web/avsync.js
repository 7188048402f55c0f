// AVSync pack, page side: AVSync Load Audio gets core Load Audio's player and upload button.
//
// The node declares `audio_upload: true`, so the frontend's own Comfy.UploadAudio adds the upload button (and
// drag-and-drop / paste). That button drives a player widget ("audioUI", type AUDIO_UI) which the frontend
// gives only to core audio nodes, so this extension declares it for our node, just before the button, which
// looks it up when it is created. When the player cannot load the chosen file (say a text file was uploaded),
// the node says so in red and a notification tells what to do; a file missing from the input folder (a
// shared workflow's placeholder name) is left to ComfyUI's own "file not found" check on Run.
import { app } from "../../scripts/app.js";

const NODE = "AVSyncLoadAudio";

function showError(node, short, message) {
  node.avsyncAudioError = short;
  app.extensionManager?.toast?.add({ severity: "error", summary: "AVSync Load Audio", detail: message, life: 10000 });
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "AVSync.LoadAudio",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE || !nodeData.input?.required) return;
    const { upload, ...inputs } = nodeData.input.required;
    nodeData.input.required = { ...inputs, audioUI: ["AUDIO_UI", {}], ...(upload ? { upload } : {}) };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.avsyncAudioError || this.flags?.collapsed) return;
      ctx.save();
      ctx.fillStyle = "#ff6b6b";
      ctx.font = "12px sans-serif";
      ctx.fillText(this.avsyncAudioError, 8, this.size[1] + 16);
      ctx.restore();
    };
  },

  async nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    const audio = node.widgets?.find((w) => w.name === "audio");
    const player = node.widgets?.find((w) => w.name === "audioUI")?.element;
    if (!audio || !player) return;
    player.addEventListener("loadedmetadata", () => {
      node.avsyncAudioError = null;
      node.setDirtyCanvas(true, true);
    });
    player.addEventListener("error", () => {
      const name = audio.value;
      if (!name || !player.getAttribute("src")) return;
      if (!audio.options.values.includes(name)) return; // not in the input folder: a placeholder, checked on Run
      showError(node, `Cannot play '${name}': not a sound?`,
        `The page cannot play '${name}': choose an audio file (wav, mp3, flac, ogg...) or a video with sound.`);
    });
  },
});
