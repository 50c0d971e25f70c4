"""The pack inside a real ComfyUI 0.3.75 server, driven over its HTTP API."""
import json
import shutil

import pytest

from conftest import PACK_NODES, REPO, VOICES, shared_path
from latentsync.media.audio import load_audio
from latentsync.audio.vad import detect_speech

pytestmark = pytest.mark.comfyui



def vad_prompt(audio_name: str, **settings) -> dict:
    inputs = {"threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 100, "padding_ms": 30,
              "backend": "jit"} | settings
    return {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": audio_name}},
        "2": {"class_type": "LatentSyncVAD", "inputs": {"audio": ["1", 0], **inputs}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": "vad_test"}},
    }


def put_input(server, source, name=None):
    target = server.dir("input") / (name or source.name)
    shutil.copy(source, target)
    return target.name


def test_pack_loaded_without_errors(comfy_server):
    log = comfy_server.log()
    assert "comfyui-latentsync" in log
    assert "IMPORT FAILED" not in log and "Cannot import" not in log


def test_every_node_is_listed_with_a_tooltip_on_every_input(object_info):
    ours = {name for name, info in object_info.items() if info.get("python_module", "").endswith("comfyui-latentsync")}
    assert ours == PACK_NODES
    for name in ours:
        info = object_info[name]
        assert info["description"] and info["category"].startswith("LatentSync")
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert inputs
        for input_name, spec in inputs.items():
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert all(info["output_tooltips"]), f"{name} has an output without a tooltip"


def test_the_sampler_nodes_settings_are_the_librarys(object_info):
    """One input per sampler setting, named, defaulted, bounded and explained by latentsync/sample/settings.py."""
    from latentsync.sample.settings import SETTINGS

    inputs = object_info["LatentSyncSampler"]["input"]["required"]
    for setting in SETTINGS:
        kind, spec = inputs[setting.name][0], inputs[setting.name][1]
        assert spec["default"] == setting.default and spec["tooltip"] == setting.help, setting.name
        if setting.choices:
            assert list(kind) == list(setting.choices) or spec.get("options") == list(setting.choices)
        else:
            assert (spec["min"], spec["max"]) == (setting.low, setting.high), setting.name


def test_the_sampler_nodes_output_their_blend_mask_last(object_info):
    """The blend mask each sampler pasted through comes after the outputs saved workflows link by slot (its
    values: tests/test_sampler_blend.py, and a run in tests/test_workflows.py's VAD A/B test)."""
    for name, before in (("LatentSyncSampler", ["images", "crops", "faces", "generated"]),
                         ("LatentSyncSpeakersSampler", ["images", "generated"])):
        info = object_info[name]
        assert info["output_name"] == [*before, "blend_mask"] and info["output"][-1] == "MASK", name


def test_js_extension_is_served(comfy_server):
    extensions = comfy_server.get("/extensions")
    assert {"/extensions/comfyui-latentsync/vad_timeline.js", "/extensions/comfyui-latentsync/node_reports.js"} <= set(extensions)
    status, body = comfy_server.request("GET", "/extensions/comfyui-latentsync/vad_timeline.js")
    assert status == 200 and "LatentSyncVAD" in body


def test_model_folders_are_registered(comfy_server):
    # An empty folder list still answers 200 for a registered key; unknown keys answer 404.
    for key in ("latentsync", "whisper"):
        status, _ = comfy_server.request("GET", f"/models/{key}")
        assert status == 200, key
    assert comfy_server.request("GET", "/models/not_a_folder_key")[0] == 404


@pytest.mark.parametrize("voice", VOICES)
def test_vad_prompt_runs_on_the_shared_voices(comfy_server, voice):
    wav = shared_path(f"media/{voice}")
    history = comfy_server.run(vad_prompt(put_input(comfy_server, wav)))
    assert history["status"]["status_str"] == "success", history["status"]
    ui = history["outputs"]["2"]["latentsync_vad"][0]
    expected = detect_speech(*load_audio(wav)).to_json()
    assert {"duration": ui["duration"], "speech": ui["speech"]} == expected
    assert len(ui["envelope"]) == 800 and ui["probs"] and ui["speech_seconds"] > 0
    (image,) = history["outputs"]["3"]["images"]
    assert (comfy_server.dir("output") / image["subfolder"] / image["filename"]).stat().st_size > 1000


def test_a_bad_prompt_yields_node_errors_and_the_server_keeps_serving(comfy_server):
    prompt = vad_prompt("no_such_file.wav", threshold=5.0, backend="nope")
    status, reply = comfy_server.queue(prompt)
    assert status == 400
    assert reply["error"]["type"] == "prompt_outputs_failed_validation"
    assert {e["type"] for e in reply["node_errors"]["1"]["errors"]} == {"custom_validation_failed"}  # no file
    # Every problem the schema shows, in one error raised by the pack (reported once, see nodes/base.py).
    (error,) = reply["node_errors"]["2"]["errors"]
    assert "backend must be one of jit, onnx, pyannote, got 'nope'" in error["details"]
    assert "threshold must be from 0.05 to 0.95, got 5" in error["details"]
    prompt["2"]["inputs"].update(backend="jit", threshold=0.5)
    del prompt["2"]["inputs"]["audio"]  # ComfyUI's own checks of the node come once the pack's pass
    status, reply = comfy_server.queue(prompt)
    assert status == 400 and "required_input_missing" in json.dumps(reply["node_errors"])
    assert comfy_server.get("/system_stats")["system"]["comfyui_version"] == "0.3.75"


def test_audio_too_short_fails_the_run_with_a_clear_message(comfy_server, tmp_path):
    import wave

    short = tmp_path / "too_short.wav"
    with wave.open(str(short), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(b"\0\0" * 200)  # 12.5 ms
    history = comfy_server.run(vad_prompt(put_input(comfy_server, short)))
    assert history["status"]["status_str"] == "error"
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == "LatentSyncVAD" and "32 ms" in error["exception_message"]
    # ...and the next prompt still runs.
    wav = shared_path("media/latentsync_demo1_audio.wav")
    assert comfy_server.run(vad_prompt(put_input(comfy_server, wav)))["status"]["status_str"] == "success"


def test_silent_audio_gives_zero_segments_not_an_error(comfy_server, tmp_path):
    import wave

    silent = tmp_path / "silence_48k_stereo.wav"
    with wave.open(str(silent), "wb") as out:
        out.setnchannels(2), out.setsampwidth(2), out.setframerate(48000)
        out.writeframes(b"\0\0\0\0" * 48000 * 3)
    history = comfy_server.run(vad_prompt(put_input(comfy_server, silent)))
    assert history["status"]["status_str"] == "success"
    ui = history["outputs"]["2"]["latentsync_vad"][0]
    assert ui["speech"] == [] and ui["duration"] == pytest.approx(3.0)


def test_shipped_workflow_converts_and_runs(comfy_server, object_info, tmp_path):
    import comfyui

    workflow = json.loads((REPO / "workflows" / "vad_preview.json").read_text())
    prompt = comfyui.workflow_to_prompt(workflow, object_info)
    (loader,) = [node for node in prompt.values() if node["class_type"] == "LoadAudio"]
    put_input(comfy_server, shared_path("media/latentsync_demo3_audio.wav"), loader["inputs"]["audio"])
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success"
    assert any("latentsync_vad" in out for out in history["outputs"].values())


@pytest.fixture(scope="module")
def whisper_file(comfy_server):
    """A random-weight whisper tiny.pt in the official format, where users put theirs."""
    from scripts.model_files import write_whisper_checkpoint

    path = write_whisper_checkpoint(comfy_server.dir("models") / "whisper" / "tiny.pt")
    return path.name


def whisper_prompt(audio_name: str, model: str, **settings) -> dict:
    prompt = vad_prompt(audio_name)
    inputs = {"fps": 30.0, "frames": 0, "seamless": False, "precision": "auto"} | settings
    prompt["4"] = {"class_type": "LatentSyncWhisperEncode",
                   "inputs": {"audio": ["1", 0], "speech": ["2", 0], "whisper_model": model, **inputs}}
    return prompt


def test_whisper_encode_runs_after_the_vad(comfy_server, whisper_file):
    wav = shared_path("media/latentsync_demo1_audio.wav")
    history = comfy_server.run(whisper_prompt(put_input(comfy_server, wav), whisper_file, frames=250))
    assert history["status"]["status_str"] == "success", history["status"]
    summary = history["outputs"]["4"]["latentsync_features"][0]
    assert summary["frames"] == 250 and summary["chunks"] == [250, 50, 384] and summary["fps"] == 30.0
    assert summary["features"] == [480, 5, 384]  # 9.6 s at 50 rows/s
    # speech frames: those whose centre lies inside a VAD segment (frames past 9.6 s are not speech)
    speech = history["outputs"]["2"]["latentsync_vad"][0]["speech"]
    expected = sum(any(s <= (i + 0.5) / 30 < e for s, e in speech) for i in range(250))
    assert summary["speech_frames"] == expected and 0 < expected < 250
    assert summary["speech_segments"] is True


def test_whisper_encode_errors(comfy_server, whisper_file):
    wav = put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))
    # The VAD branch is valid and still runs (HTTP 200); the encoder's branch is refused with node_errors.
    _, reply = comfy_server.queue(whisper_prompt(wav, "missing_tiny.pt"))
    (error,) = reply["node_errors"]["4"]["errors"]
    assert "missing_tiny.pt" in error["details"] and "checkpoints/whisper/tiny.pt" in error["details"]
    # An API prompt written for the node's earlier inputs: ComfyUI would drop speech_policy without a word.
    history = comfy_server.run(whisper_prompt(wav, whisper_file, speech_policy="silence", crossfade_frames=5))
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "no longer has a speech_policy" in error["exception_message"]
    assert "vad_policy 'silence' and crossfade_frames 5 on the LatentSync Sampler" in error["exception_message"]
    history = comfy_server.run(whisper_prompt(wav, whisper_file, speech_policy="keep", crossfade_frames=3))
    assert history["status"]["status_str"] == "success", history["status"]  # "keep" meant what it means now


def test_diarize_speakers_from_rttm_and_its_refusals(comfy_server, whisper_file):
    wav = put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))
    rttm = ("SPEAKER audio 1 0.50 2.00 <NA> <NA> ann <NA> <NA>\n"
            "SPEAKER audio 1 2.20 1.30 <NA> <NA> ben <NA> <NA>\n"
            "SPEAKER audio 1 3.00 1.00 <NA> <NA> ann <NA> <NA>\n")

    def diarize(**inputs) -> dict:
        prompt = whisper_prompt(wav, whisper_file, fps=25.0)
        prompt["5"] = {"class_type": "LatentSyncDiarize", "inputs": {
            "audio": ["1", 0], "features": ["4", 0], "source": "rttm", "pipeline": "none", "num_speakers": 0,
            "rttm": rttm} | inputs}
        return prompt

    history = comfy_server.run(diarize())
    assert history["status"]["status_str"] == "success", history["status"]
    (lanes,) = history["outputs"]["5"]["latentsync_cast"]
    assert [(s["name"], s["speech"]) for s in lanes["speakers"]] == [("ann", [[0.5, 2.5], [3.0, 4.0]]),
                                                                       ("ben", [[2.2, 3.5]])]
    history = comfy_server.run(diarize(rttm="SPEAKER audio 1 x 2 <NA> <NA> ann <NA> <NA>"))
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "RTTM line 1" in error["exception_message"]
    # pyannote without a pipeline folder is refused before the run, naming the three files' places
    _, reply = comfy_server.queue(diarize(source="pyannote"))
    (error,) = reply["node_errors"]["5"]["errors"]
    assert "speaker-diarization-3.1/config.yaml" in error["details"] and "or use source rttm" in error["details"]


def test_vad_pyannote_backend_in_comfyui(comfy_server):
    from scripts.model_files import write_pyannote_segmentation

    write_pyannote_segmentation(comfy_server.dir("models") / "pyannote" / "segmentation-3.0" / "pytorch_model.bin")
    model = "segmentation-3.0/pytorch_model.bin"
    options = comfy_server.get("/object_info/LatentSyncVAD")["LatentSyncVAD"]["input"]["optional"]["pyannote_model"]
    assert model in options[1]["options"]
    wav = put_input(comfy_server, shared_path("media/latentsync_demo3_audio.wav"))
    history = comfy_server.run(vad_prompt(wav, backend="pyannote", pyannote_model=model))
    assert history["status"]["status_str"] == "success", history["status"]
    ui = history["outputs"]["2"]["latentsync_vad"][0]
    times = [t for span in ui["speech"] for t in span]
    assert times == sorted(times) and ui["duration"] == pytest.approx(18.56, abs=0.01)

    _, reply = comfy_server.queue(vad_prompt(wav, backend="pyannote", pyannote_model="none"))
    (error,) = reply["node_errors"]["2"]["errors"]  # once, not once per input
    assert "needs a checkpoint" in error["details"] and "models/pyannote" in error["details"]


def test_sample_workflows_are_offered_as_templates(comfy_server):
    templates = comfy_server.get("/api/workflow_templates")
    shipped = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert sorted(templates["comfyui-latentsync"]) == shipped
    status, workflow = comfy_server.request("GET", "/api/workflow_templates/comfyui-latentsync/vad_preview.json")
    assert status == 200 and {n["type"] for n in workflow["nodes"]} >= {"LoadAudio", "LatentSyncVAD"}


def test_unet_loader_loads_an_official_layout_checkpoint(comfy_server):
    from scripts.model_files import write_tiny_unet

    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    write_tiny_unet(comfy_server.dir("models") / "latentsync" / "tiny" / "latentsync_unet.pt", config)
    info = comfy_server.get("/object_info/LatentSyncUNetLoader")["LatentSyncUNetLoader"]["input"]["required"]
    names = info["unet_name"][1]["options"]
    assert "tiny/latentsync_unet.pt" in names and "download 1.5" in names
    assert not any(n.endswith((".json", "tiny.pt")) for n in names)  # configs and whisper are not UNets

    def load(**settings):
        inputs = {"unet_name": "tiny/latentsync_unet.pt", "version": "auto", "dtype": "auto",
                  "quantization": "none"} | settings
        return comfy_server.run({"1": {"class_type": "LatentSyncUNetLoader", "inputs": inputs}})

    history = load()
    assert history["status"]["status_str"] == "success", history["status"]
    summary = history["outputs"]["1"]["latentsync_unet"][0]
    assert summary["parameters"] == 5_321_380 and summary["resolution"] == 256
    assert summary["dtype"] == "float32" and "config file" in summary["config"]
    assert summary["compile"] == "off"
    int8 = load(quantization="int8", compile="reduce-overhead")["outputs"]["1"]["latentsync_unet"][0]
    assert int8["weights_mb"] < 0.35 * summary["weights_mb"]
    assert int8["compile"] == "reduce-overhead"  # read back from the loaded UNet (it compiles on its first call)
    history = load(quantization="int4")
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "int4 needs a CUDA GPU" in error["exception_message"]


def test_unet_loader_lists_and_loads_gguf_and_fp8_files(comfy_server):
    """Every file `convert` writes, in models/latentsync/ and in ComfyUI's models/unet/, is offered and loads with
    the config its metadata names; a float checkpoint quantizes to a GGUF format at load; a packed file refuses
    another quantization."""
    from latentsync.unet.convert import TARGETS, Conversion, convert_unet
    from scripts.model_files import write_tiny_unet

    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    source = write_tiny_unet(comfy_server.dir("models") / "latentsync" / "tiny_q" / "latentsync_unet.pt", config)
    unet_folder = comfy_server.dir("models") / "unet"
    unet_folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for target in TARGETS[1:]:  # fp8 into models/unet/, GGUF beside the checkpoint
        kind = target.removeprefix("gguf-").upper() if target.startswith("gguf-") else target
        if target.startswith("gguf-"):
            out, name = source.with_name(f"latentsync_unet-{kind}.gguf"), f"tiny_q/latentsync_unet-{kind}.gguf"
        else:
            out = unet_folder / f"latentsync_tiny_{kind}.safetensors"
            name = out.name
        convert_unet(Conversion(source, target, out))
        files[kind] = name
    (unet_folder / "flux_other.safetensors").write_bytes(b"x")  # another model's file is not offered
    info = comfy_server.get("/object_info/LatentSyncUNetLoader")["LatentSyncUNetLoader"]["input"]["required"]
    names = info["unet_name"][1]["options"]
    assert set(files.values()) <= set(names) and "flux_other.safetensors" not in names

    def load(name, quantization="none"):
        history = comfy_server.run({"1": {"class_type": "LatentSyncUNetLoader", "inputs": {
            "unet_name": name, "version": "auto", "dtype": "auto", "quantization": quantization}}})
        return history, history["outputs"].get("1", {}).get("latentsync_unet", [None])[0]

    _, full = load("tiny_q/latentsync_unet.pt")
    for kind, name in files.items():
        history, summary = load(name)
        assert summary is not None, (kind, history["status"])
        assert summary["storage"].startswith(kind) or kind in summary["storage"], (kind, summary["storage"])
        assert summary["parameters"] == full["parameters"] == 5_321_380
        assert "metadata" in summary["config"] and summary["resolution"] == 256
        assert summary["weights_mb"] < 0.35 * full["weights_mb"], kind
    _, q8 = load("tiny_q/latentsync_unet.pt", "Q8_0")
    assert q8["storage"].startswith("Q8_0") and q8["quantization"] == "Q8_0"
    history, _ = load(files["Q4_K"], "int8")
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "already holds packed weights" in error["exception_message"]


def test_unet_loader_errors(comfy_server):
    _, reply = comfy_server.queue({"1": {"class_type": "LatentSyncUNetLoader", "inputs": {
        "unet_name": "nope.pt", "version": "auto", "dtype": "auto", "quantization": "none"}}})
    (error,) = reply["node_errors"]["1"]["errors"]
    assert "huggingface.co/ByteDance/LatentSync-1.5" in error["details"]
    # The server runs with HF_HUB_OFFLINE=1, as a machine without internet: the download says what to do.
    history = comfy_server.run({"1": {"class_type": "LatentSyncUNetLoader", "inputs": {
        "unet_name": "download 1.6", "version": "auto", "dtype": "auto", "quantization": "none"}}})
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "could not download ByteDance/LatentSync-1.6" in error["exception_message"]
    assert "models/latentsync/1.6" in error["exception_message"]
    (comfy_server.dir("models") / "latentsync" / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    history = comfy_server.run({"1": {"class_type": "LatentSyncUNetLoader", "inputs": {
        "unet_name": "broken.pt", "version": "1.5", "dtype": "auto", "quantization": "none"}}})
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "truncated or corrupt" in error["exception_message"]


@pytest.fixture(scope="module")
def upscale_models(comfy_server):
    from upscale_model_files import write_not_an_upscaler, write_realesrgan

    folder = comfy_server.dir("models") / "upscale_models"
    write_realesrgan(folder / "tiny_x2plus.pth", "x2plus", key="params_ema")
    write_realesrgan(folder / "tiny_animevideov3.pth", "animevideov3", key="params")
    write_not_an_upscaler(folder / "not_an_upscaler.pth")
    return folder


def upscale_prompt(**settings) -> dict:
    inputs = {"method": "model", "model_name": "none", "scale": 2.0, "width": 0, "height": 0, "tile": 512,
              "overlap": 32, "chunk": 8, "precision": "auto"} | settings
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 48, "batch_size": 16, "color": 0x336699}},
        "2": {"class_type": "LatentSyncUpscale", "inputs": {"images": ["1", 0], **inputs}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "upscale_test"}},
    }


def saved_sizes(server, history, node="3") -> list[tuple[int, int]]:
    from PIL import Image

    files = history["outputs"][node]["images"]
    return [Image.open(server.dir("output") / f["subfolder"] / f["filename"]).size for f in files]


@pytest.mark.parametrize("settings, size", [
    ({"model_name": "tiny_x2plus.pth"}, (80, 96)),
    ({"model_name": "tiny_animevideov3.pth", "scale": 4.0}, (160, 192)),
    ({"model_name": "tiny_animevideov3.pth", "width": 64, "height": 64}, (64, 64)),
    ({"method": "lanczos", "scale": 2.0}, (80, 96)),
])
def test_upscale_node_sizes(comfy_server, upscale_models, settings, size):
    history = comfy_server.run(upscale_prompt(**settings))
    assert history["status"]["status_str"] == "success", history["status"]
    assert saved_sizes(comfy_server, history) == [size] * 16


def test_upscale_node_takes_the_core_loaders_model(comfy_server, upscale_models):
    prompt = upscale_prompt(scale=4.0)
    prompt["4"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_animevideov3.pth"}}
    prompt["2"]["inputs"]["upscale_model"] = ["4", 0]
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    assert saved_sizes(comfy_server, history) == [(160, 192)] * 16


def test_upscale_node_errors(comfy_server, upscale_models):
    history = comfy_server.run(upscale_prompt(model_name="not_an_upscaler.pth"))
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "not_an_upscaler.pth" in error["exception_message"] and "VAE" in error["exception_message"]
    history = comfy_server.run(upscale_prompt())
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "needs an upscale model" in error["exception_message"]
    _, reply = comfy_server.queue(upscale_prompt(model_name="missing.pth"))
    assert "not found in models/upscale_models" in json.dumps(reply["node_errors"])


@pytest.fixture(scope="module")
def short_clip(comfy_server):
    """12 frames of the shared 25 fps clip at 540x960, as an mp4 in ComfyUI's input folder."""
    from media import cut_clip

    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / "clip12.mp4", 12, 540)
    return "clip12.mp4"


def faces_prompt(clip: str, **settings) -> dict:
    inputs = {"resolution": "256", "detector": "auto", "select": "largest", "index": 0, "position_x": 0.5,
              "position_y": 0.4, "threshold": -1.0} | settings  # no smoothing: a prompt from before it still runs
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LatentSyncDetectFaces", "inputs": {"images": ["2", 0], **inputs}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "crops"}},
        "5": {"class_type": "LatentSyncPasteFaces", "inputs": {"images": ["2", 0], "faces": ["3", 0],
                                                               "crops": ["3", 1]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "pasted"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "source"}},
    }


def saved_arrays(server, history, node):
    import numpy as np
    from PIL import Image

    files = history["outputs"][node]["images"]
    return [np.asarray(Image.open(server.dir("output") / f["subfolder"] / f["filename"])).astype(int) for f in files]


def test_faces_are_found_aligned_and_pasted_back(comfy_server, short_clip):
    history = comfy_server.run(faces_prompt(short_clip))
    assert history["status"]["status_str"] == "success", history["status"]
    assert history["outputs"]["3"]["latentsync_faces"][0] == {"frames": 12, "frames_with_face": 12,
                                                              "detector": "auto", "smoothing": True,
                                                              "resolution": 256,
                                                              "tracks": ["A"],  # track_all off: the chosen face
                                                              "warnings": []}  # a face was found: nothing to say
    assert saved_sizes(comfy_server, history, "4") == [(256, 256)] * 12
    # Pasting the untouched crops back changes the frames only a little, and only around the face.
    for source, pasted in zip(saved_arrays(comfy_server, history, "7"), saved_arrays(comfy_server, history, "6")):
        changed = (abs(source - pasted).max(axis=2) > 0)
        ys, xs = changed.nonzero()
        assert abs(source - pasted).mean() < 0.5 and xs.size
        assert (ys.max() - ys.min()) < 0.5 * source.shape[0] and (xs.max() - xs.min()) < 0.8 * source.shape[1]


def test_paste_faces_blends_only_where_its_mask_says(comfy_server, short_clip):
    """blend_mask=landmarks: the node's blend_mask output is the lower face only, and the frames change nowhere
    else (within the feather's reach of it: a weight under 1/255 saves as 0)."""
    import numpy as np
    from scipy.ndimage import binary_dilation

    prompt = faces_prompt(short_clip)
    prompt["5"]["inputs"].update({"blend_mask": "landmarks", "mask_grow": 5.0, "mask_feather": 4.0})
    prompt["8"] = {"class_type": "MaskToImage", "inputs": {"mask": ["5", 1]}}
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "blend"}}
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    for source, pasted, weight in zip(saved_arrays(comfy_server, history, "7"), saved_arrays(comfy_server, history, "6"),
                                      saved_arrays(comfy_server, history, "9")):
        region = weight[..., 0] > 0
        assert weight.max() >= 250 and 0 < region.mean() < 0.03  # a mouth, not the frame
        near = binary_dilation(region, iterations=8)
        assert np.array_equal(source[~near], pasted[~near])
        ys, _ = region.nonzero()
        changed_rows = (abs(source - pasted).max(axis=2) > 0).any(axis=1).nonzero()[0]
        assert changed_rows.min() >= ys.min() - 8  # nothing above the mouth region changed


def test_frames_without_a_face_pass_through(comfy_server):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 320, "height": 240, "batch_size": 4, "color": 0x808080}},
        "3": {"class_type": "LatentSyncDetectFaces", "inputs": {"images": ["1", 0], "resolution": "512",
              "detector": "dlib", "select": "largest", "index": 0, "position_x": 0.5, "position_y": 0.4,
              "threshold": -1.0}},
        "5": {"class_type": "LatentSyncPasteFaces", "inputs": {"images": ["1", 0], "faces": ["3", 0],
                                                               "crops": ["3", 1]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "noface"}},
    }
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    assert history["outputs"]["3"]["latentsync_faces"][0]["frames_with_face"] == 0
    for image in saved_arrays(comfy_server, history, "6"):
        assert (image == 0x80).all()


def test_insightface_without_its_files_says_where_to_put_them(comfy_server, short_clip):
    history = comfy_server.run(faces_prompt(short_clip, detector="insightface"))
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "det_10g.onnx" in error["exception_message"] and "models/insightface/models/buffalo_l" in error["exception_message"]


def test_syncnet_score_node_shows_the_three_numbers(comfy_server, tmp_path):
    from media import cut_clip
    from syncnet_model_files import write_syncnet_file

    write_syncnet_file(comfy_server.dir("models") / "syncnet" / "syncnet_v2.model")
    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / "clip40.mp4", 40, 540)
    wav = put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip40.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": wav}},
        "4": {"class_type": "LatentSyncSyncNetScore", "inputs": {
            "images": ["2", 0], "audio": ["3", 0], "fps": ["2", 2], "syncnet_model": "syncnet_v2.model",
            "crops": "pack", "s3fd_model": "none", "min_track": 20}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 4], "filename_prefix": "score_plot"}},
    }
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    score = history["outputs"]["4"]["latentsync_score"][0]
    assert score["crops"] == "pack" and len(score["distances"]) == 31 and score["windows"] > 0
    assert score["lse_c"] >= 0 and -15 <= score["offset"] <= 15
    assert "LSE-C" in score["report"] and saved_sizes(comfy_server, history, "5") == [(512, 192)]
    (preview,) = history["outputs"]["4"]["images"]  # the plot, also as the core image preview on the node
    assert preview["type"] == "temp" and (comfy_server.dir("temp") / preview["subfolder"] / preview["filename"]).is_file()

    prompt["4"]["inputs"]["crops"] = "s3fd"  # without sfd_face.pth: refused before running, with the fix
    _, reply = comfy_server.queue(prompt)
    (error,) = reply["node_errors"]["4"]["errors"]  # once, not once per input
    assert "sfd_face.pth" in error["details"]
    prompt["4"]["inputs"].update(crops="pack", min_track=50)  # 40 frames: too short for the reference rule
    history = comfy_server.run(prompt)
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "min_track" in error["exception_message"] or "track" in error["exception_message"]


def test_syncnet_score_node_adds_mouth_sharpness_with_faces(comfy_server):
    """With the faces and the source frames the report gains the mouth sharpness and flicker and their ratios
    (here the images are their own source: 1.00 x); jpeg_round_trip=on moves the SyncNet numbers only and says so."""
    from media import cut_clip
    from syncnet_model_files import write_syncnet_file

    write_syncnet_file(comfy_server.dir("models") / "syncnet" / "syncnet_v2.model")
    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / "clip40.mp4", 40, 540)
    wav = put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))
    prompt = faces_prompt("clip40.mp4")
    for unused in ("4", "5", "6", "7"):
        del prompt[unused]
    prompt["8"] = {"class_type": "LoadAudio", "inputs": {"audio": wav}}
    prompt["9"] = {"class_type": "LatentSyncSyncNetScore", "inputs": {
        "images": ["2", 0], "audio": ["8", 0], "fps": ["2", 2], "syncnet_model": "syncnet_v2.model",
        "crops": "pack", "s3fd_model": "none", "min_track": 20, "jpeg_round_trip": "off", "faces": ["3", 0],
        "source_images": ["2", 0]}}
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    plain = history["outputs"]["9"]["latentsync_score"][0]
    sharpness = plain["sharpness"]
    assert sharpness["generated"] > 0 and sharpness["generated"] == sharpness["source"] and sharpness["ratio"] == 1
    score_line, sharpness_line, flicker_line = plain["report"].split("\n")
    assert "LSE-C" in score_line and "JPEG" not in score_line and plain["jpeg"] is False
    value = f"{sharpness['generated']:.1f}"
    assert sharpness_line == f"mouth sharpness {value} (source {value}, 1.00 x)"
    flicker = plain["flicker"]
    assert flicker["generated"] > 0 and flicker["generated"] == flicker["source"] and flicker["ratio"] == 1
    value = f"{flicker['generated']:.2f}"
    assert flicker_line == f"mouth flicker {value} (source {value}, 1.00 x)"

    prompt["9"]["inputs"]["jpeg_round_trip"] = "on"
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    jpeg = history["outputs"]["9"]["latentsync_score"][0]
    assert jpeg["jpeg"] is True and "pack crops, JPEG round trip" in jpeg["report"]
    assert jpeg["sharpness"] == sharpness and jpeg["report"].split("\n")[1:] == [sharpness_line, flicker_line]
    assert (jpeg["crops"], jpeg["windows"]) == (plain["crops"], plain["windows"]) and jpeg["lse_d"] != plain["lse_d"]
    assert jpeg["lse_d"] == pytest.approx(plain["lse_d"], abs=1.0)  # a mild loss, not another clip

    prompt["10"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 20}}
    prompt["9"]["inputs"]["source_images"] = ["10", 0]
    history = comfy_server.run(prompt)
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "source_images has 20 frames but the faces cover 40" in error["exception_message"]


def test_upscaled_crops_fit_the_faces_and_paste_back(comfy_server, upscale_models):
    import numpy as np
    from PIL import Image

    from media import read_frames, write_clip

    # A close-up: the face about 400 px tall, larger than the 256 px the model makes.
    frames, rate = read_frames(shared_path("media/latentsync_demo1_video.mp4"), 4)
    close = np.stack([np.asarray(Image.fromarray(f[430:1030, 300:900]).resize((1200, 1200))) for f in frames])
    write_clip(comfy_server.dir("input") / "closeup4.mp4", close, rate)
    prompt = faces_prompt("closeup4.mp4")
    prompt["8"] = {"class_type": "LatentSyncUpscale", "inputs": {
        "images": ["3", 1], "faces": ["3", 0], "method": "bicubic", "model_name": "tiny_x2plus.pth", "scale": 2.0,
        "width": 0, "height": 0, "tile": 512, "overlap": 32, "chunk": 4, "precision": "auto", "fit_to_faces": True}}
    prompt["5"]["inputs"]["crops"] = ["8", 0]
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "fit"}}
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    (size,) = set(saved_sizes(comfy_server, history, "9"))
    assert size[0] == size[1] and size[0] % 8 == 0 and size[0] > 256  # the face is larger than 256 px here
    for source, pasted in zip(saved_arrays(comfy_server, history, "7"), saved_arrays(comfy_server, history, "6")):
        assert abs(source - pasted).mean() < 1.0  # the enlarged crop lands exactly where the face was

    prompt["8"]["inputs"].update(method="model", fit_to_faces=False, mouth_only=True, scale=2.0)
    history = comfy_server.run(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    assert set(saved_sizes(comfy_server, history, "9")) == {(512, 512)}
    del prompt["8"]["inputs"]["faces"]
    history = comfy_server.run(prompt)
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "need the faces input" in error["exception_message"]


def test_a_bad_choice_is_reported_once(comfy_server):
    # ComfyUI 0.3.75 repeats a message returned by validate_inputs once per argument of it (four on the
    # sampler) and flags each of those inputs; the pack raises instead, which ComfyUI reports once.
    sampler_inputs = {"images": ["1", 0], "fps": 25.0, "features": ["2", 0], "model": ["3", 0], "vae": ["4", 0],
                      "scheduler": "ddim", "steps": 20, "guidance": 1.5, "seed": 1, "deepcache_interval": 0,
                      "window": 16, "vad_policy": "off", "min_silence_s": 0.3, "crossfade_frames": 3,
                      "fast_steps": 6, "audio_longer": "fastest", "audio_shorter": "stop"}
    prompt = {  # the sampler's inputs come from nodes that fail too (no files); its own check still runs
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "LatentSyncWhisperEncode", "inputs": {
            "audio": ["5", 0], "whisper_model": "missing_tiny.pt", "fps": 25.0, "frames": 0, "seamless": False,
            "precision": "auto"}},
        "3": {"class_type": "LatentSyncUNetLoader", "inputs": {"unet_name": "missing.pt", "version": "auto",
                                                               "dtype": "auto", "quantization": "none"}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "missing_vae.safetensors"}},
        "5": {"class_type": "LoadAudio", "inputs": {"audio": "missing.wav"}},
        "6": {"class_type": "LatentSyncSampler", "inputs": sampler_inputs},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    status, reply = comfy_server.queue(prompt)
    assert status == 400
    shown = [e["details"] for node in reply["node_errors"].values() for e in node["errors"]]
    assert sum("audio_longer must be one of" in line for line in shown) == 1
    (error,) = reply["node_errors"]["6"]["errors"]
    assert "'fastest'" in error["details"]

    upscale = {"images": ["1", 0], "method": "sharpest", "model_name": "none", "scale": 2.0, "width": 0,
               "height": 0, "tile": 512, "overlap": 32, "chunk": 8, "precision": "auto"}
    prompt = {"1": prompt["1"], "2": {"class_type": "LatentSyncUpscale", "inputs": upscale},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    _, reply = comfy_server.queue(prompt)
    (error,) = reply["node_errors"]["2"]["errors"]
    assert "method must be one of" in error["details"] and "'sharpest'" in error["details"]
    upscale.update(method="model", model_name="missing.pth")
    _, reply = comfy_server.queue(prompt)
    (error,) = reply["node_errors"]["2"]["errors"]
    assert "'missing.pth' not found in models/upscale_models" in error["details"]


# ------------------------------------------------------------------------ schema checks, previews, help pages


def unet_loader_prompt(**settings) -> dict:
    # "download 1.5" passes the loader's file check without a file; nothing is downloaded before the run.
    inputs = {"unet_name": "download 1.5", "version": "auto", "dtype": "auto", "quantization": "none"} | settings
    return {"1": {"class_type": "LatentSyncUNetLoader", "inputs": inputs}}


@pytest.mark.parametrize("name, value, options", [
    ("version", "2.0", "auto, 1.5, 1.6"),
    ("dtype", "fp8", "auto, fp32, fp16, bf16"),
    ("quantization", "int2", "none, int8, int4, fp8_e4m3fn, fp8_e5m2, Q8_0, Q6_K, Q5_K, Q4_K, Q4_0"),
])
def test_the_unet_loaders_combos_are_checked_before_the_run(comfy_server, name, value, options):
    status, reply = comfy_server.queue(unet_loader_prompt(**{name: value}))
    assert status == 400, reply
    (error,) = reply["node_errors"]["1"]["errors"]  # once, not once per input
    assert f"{name} must be one of {options}, got '{value}'" in error["details"]


def test_whisper_encodes_precision_is_checked_before_the_run(comfy_server, whisper_file):
    wav = put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))
    status, reply = comfy_server.queue(whisper_prompt(wav, whisper_file, precision="fp64", fps=0.5))
    assert status == 200  # the VAD branch is valid and still runs; the encoder's is refused
    (error,) = reply["node_errors"]["4"]["errors"]
    assert "precision must be one of auto, fp32, fp16, bf16, got 'fp64'" in error["details"]
    assert "fps must be from 1 to 240, got 0.5" in error["details"]


def test_every_combo_of_every_node_is_checked(comfy_server, object_info):
    """A value outside each combo's options is refused, whatever the node: the check reads the schema."""
    for name in sorted(PACK_NODES):
        inputs = {**object_info[name]["input"]["required"], **object_info[name]["input"].get("optional", {})}
        for input_name, spec in inputs.items():
            if spec[0] != "COMBO":
                continue
            prompt = {"1": {"class_type": name, "inputs": {input_name: "no such choice"}}}
            if not object_info[name]["output_node"]:
                prompt["2"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
            _, reply = comfy_server.queue(prompt)
            shown = json.dumps(reply.get("node_errors", {}).get("1"))
            assert "'no such choice'" in shown, (name, input_name, reply)
            # the options, or for a model file where such files go
            assert f"{input_name} must be one of" in shown or "not found in" in shown, (name, input_name, reply)


def test_the_vad_timeline_is_also_a_core_image_preview(comfy_server):
    history = comfy_server.run(vad_prompt(put_input(comfy_server, shared_path("media/latentsync_demo1_audio.wav"))))
    assert history["status"]["status_str"] == "success", history["status"]
    shown = history["outputs"]["2"]
    (preview,) = shown["images"]
    assert preview["type"] == "temp" and (comfy_server.dir("temp") / preview["subfolder"] / preview["filename"]).is_file()
    assert shown["latentsync_vad"][0]["speech"]  # the timeline widget's payload is still there


def test_every_tooltip_is_one_short_line(object_info):
    for name in PACK_NODES:
        info = object_info[name]
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        tips = [(input_name, spec[1]["tooltip"]) for input_name, spec in inputs.items()]
        tips += list(zip(info["output_name"], info["output_tooltips"]))
        for what, tip in tips:
            assert "\n" not in tip and len(tip) <= 120, (name, what, len(tip), tip)


def test_every_pack_node_validates_from_its_schema_and_marks_its_overrides():
    import ast

    for path in (REPO / "nodes").glob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            methods = {f.name: f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if "define_schema" in methods:
                assert [ast.unparse(b) for b in cls.bases] == ["LatentSyncNode"], cls.name
                assert "validate_inputs" not in methods, cls.name  # the base's, from the schema
            for name in ("define_schema", "execute", "validate_inputs", "check_inputs", "get_node_list"):
                if name in methods and (cls.name, name) != ("LatentSyncNode", "check_inputs"):  # defined there
                    decorators = [ast.unparse(d) for d in methods[name].decorator_list]
                    assert "override" in decorators, (cls.name, name)
