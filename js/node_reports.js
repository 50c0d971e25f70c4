// Shows what a LatentSync node found or loaded (scores, face counts, model facts) on the node itself,
// from the node's UI output, so results are visible on the graph without extra preview nodes.
import { app } from "../../scripts/app.js";

const REPORTS = {
  // The report's lines: the three numbers, then "mouth sharpness ..." and "mouth flicker ..." when faces were
  // connected (d.sharpness, d.flicker).
  LatentSyncSyncNetScore: ["latentsync_score", (d) => d.report.split("\n")],
  LatentSyncDetectFaces: ["latentsync_faces", (d) =>
    [`${d.frames_with_face} of ${d.frames} frames with a face · ${d.resolution} px · ${d.detector}` +
     (d.smoothing === false ? " · not smoothed" : ""),
     ...(d.tracks?.length > 1 ? [`face tracks ${d.tracks.join(", ")}`] : [])]],
  LatentSyncUNetLoader: ["latentsync_unet", (d) =>
    [`${(d.parameters / 1e6).toFixed(1)} M parameters · ${d.dtype} · ${d.quantization} · ${d.weights_mb} MB`,
     `${d.resolution} px faces · ${d.config}`, ...(d.download ? [d.download] : [])]],
  LatentSyncSampler: ["latentsync_sampler", (d) => [`${d.generated} of ${d.frames} frames generated`]],
  LatentSyncSampleVideo: ["latentsync_video", (d) => d.reused ? [`reused ${d.file}`] :
    [`${d.generated} of ${d.frames} frames generated${d.resumed_segments ? ` · ${d.resumed_segments} segments resumed` : ""}`]],
  LatentSyncSpeakersSampler: ["latentsync_sampler", (d) =>
    [`${d.generated} of ${d.frames} frames generated`, `faces: ${d.faces.join(", ")}`]],
  LatentSyncWhisperEncode: ["latentsync_features", (d) =>
    [`${d.frames} frames at ${d.fps} fps · ${d.speech_frames} with speech`,
     `${d.duration.toFixed(2)} s of audio${d.speech_segments ? "" : " · no VAD"}${d.seamless ? " · seamless" : ""}`]],
};
const WIDGET_NAME = "latentsync_report";

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (widget) return widget;
  const element = document.createElement("div");
  element.className = "latentsync-report";
  Object.assign(element.style, { font: "12px monospace", color: "#ddd", whiteSpace: "pre-wrap",
                                 padding: "4px", overflow: "hidden" });
  widget = node.addDOMWidget(WIDGET_NAME, "latentsync_report", element, {
    serialize: false, // display only: keeps widgets_values and API prompts unchanged
    hideOnZoom: false,
    getMinHeight: () => 40,
  });
  widget.element = element;
  return widget;
}

app.registerExtension({
  name: "latentsync.nodeReports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = REPORTS[nodeData.name];
    if (!spec) return;
    const [key, lines] = spec;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const data = output?.[key]?.[0];
      if (!data) return;
      const widget = reportWidget(this);
      // Warnings (a run that changed nothing, a video read upright, ...) follow the report, on every node.
      const warnings = (data.warnings ?? []).map((w) => `⚠ ${w}`);
      widget.element.textContent = [...lines(data), ...warnings].join("\n");
      widget.element.dataset.report = JSON.stringify(data);
      this.setDirtyCanvas?.(true, true);
    };
  },
});
