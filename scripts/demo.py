"""The pack's main job, headless through a real ComfyUI: lip-sync a face to a voice.

Called by scripts/demo.sh after set-up. Inputs: your --video (or still image) and --audio, or a demo built
from packages (the public-domain astronaut portrait that scikit-image ships, and a voice spoken by
espeak-ng; nothing third-party is copied). Weights: the official LatentSync 1.5 UNet, whisper tiny.pt and
sd-vae-ft-mse are fetched into ComfyUI's model folders when the hub is reachable (you ran the command, so
that is asking; --no-download stops it); offline, the demo says which files to put where and still runs
what needs no weights: the VAD preview. Outputs go to HOME/demo/output; --serve keeps ComfyUI up.
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
VOICE, VIDEO = "latentsync_demo_voice.wav", "latentsync_demo.mp4"  # the names the sample workflows load
VOICE_B = "latentsync_demo_voice_b.wav"  # latentsync_many_voices' second voice
DEMO_TEXT = ("Hello! This face was never filmed speaking. [[ ]] "
             "Now it says what the voice says, and rests its mouth in the pauses.")
DEMO_TEXT_B = ("Here is a second voice for the same face. [[ ]] "
               "The video was prepared once, so only the mouth is made again.")
sys.path.insert(0, str(REPO))
from latentsync.catalogue import CATALOGUE  # noqa: E402  (the pack's model table; imports nothing heavy)

# What the basic workflow loads: file under ComfyUI/models -> (hub repository, file in it)
WEIGHTS = {CATALOGUE[key].path: (CATALOGUE[key].source, CATALOGUE[key].source_file)
           for key in ("unet_1.5", "whisper", "vae")}


def demo_voice(target: Path, text: str | None = None) -> None:
    """Two sentences with a pause between them, spoken by espeak-ng, as a 16-bit WAV."""
    import wave

    import numpy as np

    sys.path.insert(0, str(REPO))
    from latentsync.media.audio import load_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is not installed (Debian: apt-get install espeak-ng); or pass your own voice with --audio")
    parts = []
    for i, text in enumerate((text or DEMO_TEXT).split(" [[ ]] ")):
        path = target.with_name(f"part{i}.wav")
        subprocess.run([exe, "-w", str(path), text], check=True)
        parts.append(load_audio(path))
        path.unlink()
    rate = parts[0][1]
    pause = np.zeros(int(1.2 * rate), np.float32)
    samples = np.concatenate([pause[: rate // 2], parts[0][0][0].numpy(), pause, parts[1][0][0].numpy(), pause[: rate // 2]])
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes((samples * 32767).astype(np.int16).tobytes())


def demo_video(target: Path, seconds: float, fps: int = 25) -> None:
    """The astronaut portrait that scikit-image ships (public domain, NASA), as a still video."""
    import numpy as np
    from skimage import data

    sys.path.insert(0, str(REPO))
    from latentsync.media.video import write_video

    import torch

    frames = torch.from_numpy(np.ascontiguousarray(data.astronaut()))[None].repeat(int(seconds * fps) + 1, 1, 1, 1)
    write_video(target, frames, fps)


def hub_reachable(repo: str, timeout: float = 10.0) -> bool:
    """One look-up of `repo` on the hub, without the retries (and their messages) of huggingface_hub's
    downloads: False at once when HF_HUB_OFFLINE is set or the hub does not answer."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        if constants.HF_HUB_OFFLINE:
            return False
        get_session().head(f"{constants.ENDPOINT}/api/models/{repo}", timeout=timeout)
    except Exception:  # noqa: BLE001 -- no name, no route, no huggingface_hub: offline, whatever the cause
        return False
    return True


def fetch_weights(models: Path, download: bool) -> list[str]:
    """Fetch the missing official weights when allowed and reachable; returns what is still missing."""
    missing = [name for name in WEIGHTS if not (models / name).is_file()]
    if missing and download and not hub_reachable(WEIGHTS[missing[0]][0]):
        print("[demo] offline: skipping downloads")
    elif missing and download:
        from huggingface_hub import hf_hub_download

        for name in list(missing):
            repo, filename = WEIGHTS[name]
            try:
                print(f"[demo] downloading {repo}/{filename}")
                got = Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=models / ".download" / repo))
                (models / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(got, models / name)
                missing.remove(name)
            except Exception as exc:  # offline, hub unreachable: say what to do by hand
                print(f"[demo] could not download {repo}/{filename}: {type(exc).__name__}")
                break
    return missing


def run_workflow(server: comfyui.ComfyServer, name: str, object_info: dict, timeout: float = 3600) -> dict:
    workflow = json.loads((REPO / "workflows" / name).read_text())
    history = server.run(comfyui.workflow_to_prompt(workflow, object_info), timeout=timeout)
    if history["status"]["status_str"] != "success":
        errors = [m[1].get("exception_message") for m in history["status"]["messages"] if m[0] == "execution_error"]
        raise SystemExit(f"[demo] {name} failed: {errors}")
    return history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="your talking-face video or still image")
    parser.add_argument("--audio", type=Path, help="your voice track (any format PyAV reads)")
    parser.add_argument("--no-download", action="store_true", help="never fetch weights; use what is there")
    parser.add_argument("--serve", action="store_true", help="keep ComfyUI running afterwards (Ctrl-C stops it)")
    parser.add_argument("--port", type=int, default=8188, help="0 = any free port")
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (from scripts/setup.sh)")
    parser.add_argument("--home", type=Path, required=True, help="cache folder; the demo works in HOME/demo")
    args = parser.parse_args()

    port = args.port if args.port and comfyui.port_is_free(args.port) else comfyui.free_port()
    server = comfyui.ComfyServer(args.comfyui, args.home / "demo", REPO, port=port)
    inputs = server.dir("input")
    inputs.mkdir(parents=True, exist_ok=True)
    if args.audio:
        shutil.copy(args.audio, inputs / VOICE)
        shutil.copy(args.audio, inputs / VOICE_B)  # replace it with another voice for latentsync_many_voices
    else:
        demo_voice(inputs / VOICE)
        demo_voice(inputs / VOICE_B, DEMO_TEXT_B)
    if args.video and args.video.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        shutil.copy(args.video, inputs / VIDEO)
    else:
        sys.path.insert(0, str(REPO))
        from latentsync.media.audio import load_audio

        waveform, rate = load_audio(inputs / VOICE)
        if args.video:  # a still image: as long as the voice
            from latentsync.media.video import read_frames, write_video

            still, _ = read_frames(args.video)
            write_video(inputs / VIDEO, still[:1].repeat(int(waveform.shape[1] / rate * 25) + 1, 1, 1, 1), 25)
        else:
            demo_video(inputs / VIDEO, waveform.shape[1] / rate)
    print(f"[demo] inputs: {inputs / VIDEO}, {inputs / VOICE}")
    missing = fetch_weights(server.dir("models"), download=not args.no_download)

    with server:
        print(f"[demo] ComfyUI {comfyui.COMFYUI_VERSION} with the pack at {server.url}")
        object_info = server.get("/object_info")
        history = run_workflow(server, "vad_preview.json", object_info)
        for output in history["outputs"].values():
            for vad in output.get("latentsync_vad", []):
                print(json.dumps({"duration": vad["duration"], "speech": vad["speech"]}))
        if missing:
            print("[demo] the lip-sync needs these files, which are not there yet; put them in place and run again:")
            for name in missing:
                repo, filename = WEIGHTS[name]
                print(f"  {server.dir('models') / name}  <-  https://huggingface.co/{repo} ({filename}; "
                      f"licence: {next(m.licence for m in CATALOGUE.values() if m.path == name)})")
        else:
            history = run_workflow(server, "latentsync_basic.json", object_info)
            for output in history["outputs"].values():
                for video in output.get("images", []):
                    if video["filename"].endswith(".mp4"):
                        print(f"[demo] lip-synced video: {server.dir('output') / video['subfolder'] / video['filename']}")
        if args.serve:
            print(f"[demo] open {server.url} and load a workflow from {REPO / 'workflows'} (Ctrl-C to stop)")
            try:
                while server.process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
