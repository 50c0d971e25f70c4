// Saved workflows from earlier versions of the pack, brought up to date as the editor loads them, so an old
// file still means what it meant. Widget values are saved by position, so an input that goes away would
// shift every value after it.
//
// Whisper Encode lost `speech_policy` and `crossfade_frames` (the sampler's vad_policy decides which frames
// get silence). Their two values are taken out; a node that had "silence" hands the policy and its
// cross-fade to the LatentSync Sampler(s) it feeds whose vad_policy is "off", which gives the same chunks.
import { app } from "../../scripts/app.js";

const WHISPER = "LatentSyncWhisperEncode";
const SAMPLER = "LatentSyncSampler";
const REMOVED = ["speech_policy", "crossfade_frames"];
const OLD_WHISPER_VALUES = 7; // whisper_model, fps, frames, speech_policy, crossfade_frames, seamless, precision
const pending = new Map(); // Whisper Encode node -> {crossfade} of a "silence" policy to hand on

function oldWhisperValues(values) {
  return Array.isArray(values) && values.length === OLD_WHISPER_VALUES &&
    ["keep", "silence"].includes(values[3]) && typeof values[4] === "number";
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

// The nodes fed by the node's first output, from the graph's own link table: an output slot's `links` list is
// a deprecated mirror from frontend 1.58 on (reading it logs a warning), while `graph.links` is the Map of every
// LLink in the pinned frontend (1.32, a Map that also reads as a record) and in 1.58 alike.
function targets(graph, node) {
  const links = graph.links instanceof Map ? [...graph.links.values()] : Object.values(graph.links ?? {});
  return links.filter((link) => link && link.origin_id === node.id && link.origin_slot === 0)
    .map((link) => graph.getNodeById(link.target_id)).filter(Boolean);
}

app.registerExtension({
  name: "LatentSync.migrations",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== WHISPER) return;
    const configure = nodeType.prototype.configure;
    nodeType.prototype.configure = function (info) {
      if (oldWhisperValues(info?.widgets_values)) {
        const [, , , policy, crossfade] = info.widgets_values;
        info = { ...info, widgets_values: info.widgets_values.filter((_, i) => i !== 3 && i !== 4) };
        // Unlinked widget sockets of the removed inputs would come back as stray input slots.
        info.inputs = info.inputs?.filter((slot) => !(REMOVED.includes(slot.name) && slot.link == null));
        if (policy === "silence") pending.set(this, { crossfade });
      }
      return configure.call(this, info);
    };
  },
  afterConfigureGraph() {
    for (const [node, { crossfade }] of pending) {
      const graph = node.graph;
      if (!graph) continue;
      for (const sampler of targets(graph, node)) {
        if (sampler.type !== SAMPLER || widget(sampler, "vad_policy")?.value !== "off") continue;
        widget(sampler, "vad_policy").value = "silence";
        const fade = widget(sampler, "crossfade_frames");
        if (fade) fade.value = crossfade;
      }
    }
    pending.clear();
  },
});
