"""Run the pack's VAD sample workflow through a real ComfyUI, headless, on a demo voice or yours.

Called by scripts/demo.sh after set-up. The voice is spoken by espeak-ng (nothing third-party is
copied), unless --audio names your own file. Outputs go to HOME/demo/output; with --serve the server
stays up so you can open the graph editor and load workflows/vad_preview.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import comfyui

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "vad_preview.json"
DEMO_TEXT = ("Hello! This voice was made for the lip sync demo. [[ ]] "
             "After a short pause, it speaks again, so you can see the silence between the words.")


def demo_voice(target: Path) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is not installed (Debian: apt-get install espeak-ng); "
                 "or pass your own voice with --audio FILE")
    # Two sentences with a long pause between them, so the VAD has something to find.
    first, second = DEMO_TEXT.split(" [[ ]] ")
    parts = [target.with_name("part1.wav"), target.with_name("part2.wav")]
    for text, path in zip((first, second), parts):
        subprocess.run([exe, "-w", str(path), text], check=True)
    sys.path.insert(0, str(REPO))
    import torch
    import wave

    from latentsync.audio import load_audio

    (a, rate), (b, _) = load_audio(parts[0]), load_audio(parts[1])
    gap = torch.zeros(1, int(1.5 * rate))
    samples = (torch.cat([gap[:, : rate // 2], a, gap, b, gap[:, : rate // 2]], dim=1) * 32767).short()
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.numpy().tobytes())
    for path in parts:
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, help="your own voice track (any format PyAV reads)")
    parser.add_argument("--serve", action="store_true", help="keep ComfyUI running afterwards (Ctrl-C stops it)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (from scripts/setup.sh)")
    parser.add_argument("--home", type=Path, required=True, help="cache folder; the demo works in HOME/demo")
    args = parser.parse_args()

    port = args.port if comfyui.port_is_free(args.port) else comfyui.free_port()
    server = comfyui.ComfyServer(args.comfyui, args.home / "demo", REPO, port=port)
    workflow = json.loads(WORKFLOW.read_text())
    (loader,) = [node for node in workflow["nodes"] if node["type"] == "LoadAudio"]
    voice = server.dir("input") / loader["widgets_values"][0]
    voice.parent.mkdir(parents=True, exist_ok=True)
    if args.audio:
        shutil.copy(args.audio, voice)
    else:
        demo_voice(voice)
    print(f"[demo] voice: {voice}")

    with server:
        print(f"[demo] ComfyUI {comfyui.COMFYUI_VERSION} with the pack at {server.url}")
        prompt = comfyui.workflow_to_prompt(workflow, server.get("/object_info"))
        history = server.run(prompt)
        if history["status"]["status_str"] != "success":
            errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
            print(json.dumps(errors, indent=1), file=sys.stderr)
            return 1
        for output in history["outputs"].values():
            for vad in output.get("latentsync_vad", []):
                print(json.dumps({"duration": vad["duration"], "speech": vad["speech"]}))
            for image in output.get("images", []):
                print(f"[demo] timeline picture: {server.dir(image['type']) / image['subfolder'] / image['filename']}")
        print("[demo] the same from the command line: python -m latentsync vad", voice)
        if args.serve:
            print(f"[demo] open {server.url} and load {WORKFLOW} (Ctrl-C to stop)")
            try:
                while server.process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
