"""The shipped lip-sync workflows run in a real ComfyUI through POST /prompt, with random-weight models in
the official formats and cuts of a shared clip (0.96 s; 4 frames for the real-size VAE and the 512 px graph)."""
import json

import av
import torch
import numpy as np
import pytest

from conftest import DEMO_FRAMES, REPO, shared_path, write_lipsync_inputs

pytestmark = pytest.mark.comfyui


# The long lip-sync runs get a ComfyUI of their own: a server that has already run the whole node suite holds
# many GB and ran these several times slower.
@pytest.fixture(scope="module")
def comfy_server(comfyui_dir, tmp_path_factory):
    import comfyui

    server = comfyui.ComfyServer(comfyui_dir, tmp_path_factory.mktemp("comfyui-workflows"), REPO).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def lipsync_inputs(comfy_server):
    return write_lipsync_inputs(comfy_server)


@pytest.fixture(scope="module")
def lipsync_models(comfy_server, tiny_unet_config):
    from scripts.model_files import write_lipsync_models

    return write_lipsync_models(comfy_server.dir("models"), tiny_unet_config)


def load_prompt(name: str, object_info: dict, vae: str = "taesd") -> dict:
    """The shipped workflow as an API prompt. Its VAE is swapped for TAESD (same latent space: 4 channels, 8x
    down, the SD scaling) through ComfyUI's own Load VAE, a hundred times cheaper on a CPU than the full SD VAE
    these graphs name. Only `test_basic_workflow_lip_syncs_the_clip` runs the real-size VAE (vae=None): the
    graphs' wiring, not the VAE, is what the other tests are about, and tests/test_vae.py checks the VAE."""
    import comfyui

    prompt = comfyui.workflow_to_prompt(json.loads((REPO / "workflows" / name).read_text()), object_info)
    for node in prompt.values():
        if node["class_type"] == "VAELoader" and vae is not None:
            assert node["inputs"]["vae_name"] == "vae-ft-mse-840000-ema-pruned.safetensors"
            node["inputs"]["vae_name"] = vae
    return prompt


def failure(history: dict) -> str:
    """What went wrong in a finished prompt: the failing node and its exception's message."""
    kind, data = history["status"]["messages"][-1]
    return f"{kind}: {data.get('node_type')}: {data.get('exception_message', data)}"


def node_id(prompt: dict, class_type: str, title: str | None = None) -> str:
    (found,) = [k for k, v in prompt.items() if v["class_type"] == class_type
                and (title is None or v["_meta"]["title"].startswith(title))]
    return found


def save_images(prompt: dict, source: list) -> str:
    """Adds a PreviewImage of `source`: PNGs at ComfyUI's fast compression, in its temp folder."""
    key = str(1000 + len(prompt))
    prompt[key] = {"class_type": "PreviewImage", "inputs": {"images": source}}
    return key


def images_of(server, history, key) -> list[np.ndarray]:
    from PIL import Image

    files = history["outputs"][key]["images"]
    return [np.asarray(Image.open(server.dir(f["type"]) / f["subfolder"] / f["filename"])).astype(int) for f in files]


def video_of(server, history, key) -> tuple[int, float]:
    (saved,) = history["outputs"][key]["images"]  # SaveVideo reports its file under "images"
    with av.open(str(server.dir("output") / saved["subfolder"] / saved["filename"])) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def face_boxes(frames: list[np.ndarray]) -> np.ndarray:
    from latentsync.face.detect import detect_faces

    return detect_faces(np.stack(frames).astype(np.uint8)).boxes


def assert_only_faces_changed(sources, outputs):
    boxes = face_boxes(sources)
    for source, output, (x1, y1, x2, y2) in zip(sources, outputs, boxes):
        diff = np.abs(source - output).max(axis=2)
        margin = 0.8 * (x2 - x1)
        outside = np.ones_like(diff, dtype=bool)
        outside[int(max(0, y1 - margin)): int(y2 + margin), int(max(0, x1 - margin)): int(x2 + margin)] = False
        assert diff[outside].max() == 0


TINY_FRAMES = 4  # one short sampler window: for the real-size SD VAE (seconds a frame) and the 512 px sampler


@pytest.fixture(scope="module")
def tiny_inputs(comfy_server) -> tuple[str, str]:
    """A 4-frame cut of the clip and its voice, in the server's input folder: (video, voice)."""
    from media import cut_clip, cut_voice

    video, voice = "latentsync_demo_4.mp4", "latentsync_demo_voice_4.wav"
    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / video, TINY_FRAMES, 720)
    cut_voice(shared_path("media/latentsync_demo1_audio.wav"), comfy_server.dir("input") / voice, TINY_FRAMES / 25)
    return video, voice


def use_inputs(prompt: dict, inputs: tuple[str, str]) -> dict:
    """The prompt with its LoadVideo and LoadAudio reading `inputs` (video, voice) instead."""
    prompt[node_id(prompt, "LoadVideo")]["inputs"]["file"], prompt[node_id(prompt, "LoadAudio")]["inputs"]["audio"] = \
        inputs
    return prompt


def test_basic_workflow_lip_syncs_the_clip(comfy_server, object_info, tiny_inputs, lipsync_models):
    """End to end with the real-size SD VAE (the UNet is tiny; its full size is tests/test_unet_files.py's)."""
    prompt = use_inputs(cpu_friendly(load_prompt("latentsync_basic.json", object_info, vae=None)), tiny_inputs)
    parts, sampler = node_id(prompt, "GetVideoComponents"), node_id(prompt, "LatentSyncSampler")
    source_key, output_key = save_images(prompt, [parts, 0]), save_images(prompt, [sampler, 0])
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    frames, fps = video_of(comfy_server, history, node_id(prompt, "SaveVideo"))
    assert (frames, fps) == (TINY_FRAMES, 25.0)
    sources, outputs = images_of(comfy_server, history, source_key), images_of(comfy_server, history, output_key)
    assert len(outputs) == len(sources) == TINY_FRAMES
    assert any(np.abs(s - o).max() > 0 for s, o in zip(sources, outputs))  # the mouths were regenerated
    assert_only_faces_changed(sources, outputs)


def test_vad_ab_workflow_skips_the_pause(comfy_server, object_info, lipsync_inputs, lipsync_models):
    prompt = cpu_friendly(load_prompt("latentsync_vad_ab.json", object_info))
    parts = node_id(prompt, "GetVideoComponents")
    reference, skip = node_id(prompt, "LatentSyncSampler", "A:"), node_id(prompt, "LatentSyncSampler", "B:")
    source_key, skip_key = save_images(prompt, [parts, 0]), save_images(prompt, [skip, 0])
    prompt["2000"] = {"class_type": "MaskToImage", "inputs": {"mask": [skip, 3]}}
    prompt["2001"] = {"class_type": "MaskToImage", "inputs": {"mask": [reference, 3]}}
    generated_key, reference_key = save_images(prompt, ["2000", 0]), save_images(prompt, ["2001", 0])
    prompt["2002"] = {"class_type": "MaskToImage", "inputs": {"mask": [skip, 4]}}  # blend_mask, the last output
    blend_key = save_images(prompt, ["2002", 0])
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    for save in (k for k, v in prompt.items() if v["class_type"] == "SaveVideo"):
        assert video_of(comfy_server, history, save) == (DEMO_FRAMES, 25.0)
    generated = [int(img.max() > 0) for img in images_of(comfy_server, history, generated_key)]
    assert 0 < sum(generated) < DEMO_FRAMES, generated  # the voice starts after a 0.45 s pause
    sources, skipped = images_of(comfy_server, history, source_key), images_of(comfy_server, history, skip_key)
    blends = images_of(comfy_server, history, blend_key)
    for flag, source, output, blend in zip(generated, sources, skipped, blends):
        assert blend.shape == source.shape and (blend.max() > 0) == bool(flag)  # 0 where the frame passed through
        assert (blend[..., 0] > 0).mean() < 0.2  # the face, not the frame
        if not flag:
            assert np.array_equal(source, output)
    assert all(img.min() > 0 for img in images_of(comfy_server, history, reference_key))  # off: every frame


def test_many_voices_workflow_prepares_the_video_once_and_equals_runs_without_it(comfy_server, object_info,
                                                                                  lipsync_inputs, lipsync_models):
    """One Prepare Video feeds two samplers with two voices; the same graph without the prepared links gives the
    same frames, bit for bit (PNG previews are lossless), and differs between the voices."""
    prompt = cpu_friendly(load_prompt("latentsync_many_voices.json", object_info))
    samplers = sorted(k for k, v in prompt.items() if v["class_type"] == "LatentSyncSampler")
    prepare = node_id(prompt, "LatentSyncPrepareVideo")
    assert len(samplers) == 2 and all(prompt[k]["inputs"]["prepared"] == [prepare, 0] for k in samplers)
    keys = [save_images(prompt, [k, 0]) for k in samplers]
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    (note,) = history["outputs"][prepare]["latentsync_prepared"]
    assert note["frames"] == DEMO_FRAMES and note["faces"] > 0 and note["made"]
    prepared = [images_of(comfy_server, history, key) for key in keys]
    for k in samplers:
        del prompt[k]["inputs"]["prepared"]
    del prompt[prepare]
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    for key, made in zip(keys, prepared):
        assert all(np.array_equal(a, b) for a, b in zip(images_of(comfy_server, history, key), made, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(*prepared))  # the two voices move the mouths differently

    prompt = cpu_friendly(load_prompt("latentsync_many_voices.json", object_info))  # prepared from other frames
    prompt["3000"] = {"class_type": "ImageInvert", "inputs": {"image": prompt[prepare]["inputs"]["images"]}}
    prompt[prepare]["inputs"]["images"] = ["3000", 0]
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "error"
    assert "the prepared video was made from another video or with other settings: video.sha256" in failure(history)


@pytest.fixture(scope="module")
def poc_models(lipsync_models, tiny_unet_config):
    """What the PoC workflows add: a 1.6-style (512 px) tiny UNet, SyncNet, a Real-ESRGAN x2plus and GFPGANv1.4
    (full size: its architecture has one size)."""
    from scripts.model_files import write_tiny_unet
    from syncnet_model_files import write_syncnet_file
    from upscale_model_files import write_gfpgan, write_realesrgan

    write_tiny_unet(lipsync_models / "latentsync" / "1.6" / "latentsync_unet.pt", tiny_unet_config, seed=1,
                    resolution=512)
    write_syncnet_file(lipsync_models / "syncnet" / "syncnet_v2.model")
    write_realesrgan(lipsync_models / "upscale_models" / "RealESRGAN_x2plus.pth", "x2plus")
    write_gfpgan(lipsync_models / "facerestore_models" / "GFPGANv1.4.pth")
    return lipsync_models


def cpu_friendly(prompt: dict) -> dict:
    """The shipped graph as it is, with values a 2-core CPU runs in seconds: 2 steps, fp32 instead of fp16/bf16,
    int8 where int4 (CUDA only; its CPU refusal is tested with the loader), and SyncNet tracks of 8 frames."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("LatentSyncSampler", "LatentSyncSampleVideo", "LatentSyncSpeakersSampler"):
            inputs["steps"] = 2
        if node["class_type"] == "LatentSyncUNetLoader":
            inputs["dtype"] = "fp32"
            inputs["quantization"] = "int8" if inputs["quantization"] == "int4" else inputs["quantization"]
        if node["class_type"] == "LatentSyncSyncNetScore":
            inputs["min_track"] = 8
    return prompt


@pytest.mark.parametrize("name", ["latentsync_poc_vad_ab.json", "latentsync_poc_quant.json",
                                  "latentsync_poc_scheduler.json"])
def test_poc_workflows_show_scores(comfy_server, object_info, lipsync_inputs, poc_models, name):
    """On the 0.96 s cut, as the VAD A/B test: SyncNet needs speech (it starts at 0.45 s), and the samplers
    these graphs share with that test (the reference settings on the same inputs) come from ComfyUI's cache."""
    prompt = cpu_friendly(load_prompt(name, object_info))
    history = comfy_server.run(prompt, timeout=1800)
    assert history["status"]["status_str"] == "success", failure(history)
    scores = [history["outputs"][k]["latentsync_score"][0] for k, v in prompt.items()
              if v["class_type"] == "LatentSyncSyncNetScore"]
    assert len(scores) == sum(v["class_type"] == "LatentSyncSampler" for v in prompt.values()) >= 2
    for score in scores:
        assert score["crops"] == "pack" and len(score["distances"]) == 31 and "LSE-C" in score["report"]
    for save in (k for k, v in prompt.items() if v["class_type"] == "SaveVideo"):
        assert video_of(comfy_server, history, save) == (DEMO_FRAMES, 25.0)


def test_upscale_workflow_compares_four_ways(comfy_server, object_info, tiny_inputs, poc_models):
    """On the 4-frame cut: one window per sampler, every frame generated (the graph's VAD policy is off); the
    512 px sampler and GFPGAN are the costly parts on a CPU."""
    from latentsync.upscale.resize import resize_nchw

    prompt = use_inputs(cpu_friendly(load_prompt("latentsync_upscale.json", object_info)), tiny_inputs)
    upscale, restore = node_id(prompt, "LatentSyncUpscale"), node_id(prompt, "LatentSyncRestoreMouths")
    crops_key, restored_key = save_images(prompt, [upscale, 0]), save_images(prompt, [restore, 0])
    generated_key = save_images(prompt, prompt[restore]["inputs"]["images"])
    history = comfy_server.run(prompt, timeout=1800)
    assert history["status"]["status_str"] == "success", failure(history)
    saves = sorted((v["inputs"]["filename_prefix"], k) for k, v in prompt.items() if v["class_type"] == "SaveVideo")
    assert [prefix for prefix, _ in saves] == ["latentsync/upscale_a_256_bicubic", "latentsync/upscale_b_256_realesrgan",
                                               "latentsync/upscale_c_512", "latentsync/upscale_d_256_restored"]
    for _, key in saves:
        assert video_of(comfy_server, history, key) == (TINY_FRAMES, 25.0)
    side = images_of(comfy_server, history, crops_key)[0].shape[0]
    assert side >= 256 and side % 8 == 0
    # GFPGAN at its 512 px: above the mouth the restored crops are the generated ones resized (bicubic), within
    # the PNGs' rounding; in the mouth GFPGAN's output is blended in.
    generated = np.stack(images_of(comfy_server, history, generated_key)).astype(np.float32) / 255
    restored = np.stack(images_of(comfy_server, history, restored_key)).astype(np.float32) / 255
    assert generated.shape[1:3] == (256, 256) and restored.shape == (TINY_FRAMES, 512, 512, 3)
    base = resize_nchw(torch.from_numpy(generated).permute(0, 3, 1, 2), (512, 512), "bicubic").permute(0, 2, 3, 1)
    difference = np.abs(restored - base.clamp(0, 1).numpy()) * 255
    assert difference[:, :140].max() <= 2.5 and difference[:, 360:450, 180:330].mean() > 5


def test_cancel_mid_run_writes_nothing_and_the_server_keeps_serving(comfy_server, object_info, lipsync_inputs,
                                                                      lipsync_models):
    prompt = load_prompt("latentsync_basic.json", object_info)
    sampler, save = node_id(prompt, "LatentSyncSampler"), node_id(prompt, "SaveVideo")
    prompt[sampler]["inputs"]["seed"] = 7  # not cached from an earlier run: the sampler really runs
    prompt[sampler]["inputs"]["steps"] = 200  # minutes of work: the interrupt lands long before the end
    prompt[save]["inputs"]["filename_prefix"] = "latentsync/cancelled"

    def sampling(message: dict, prompt_id: str) -> bool:  # this prompt's sampler has reported progress
        data = message["data"]
        return message["type"] == "progress" and data.get("prompt_id") == prompt_id and data.get("node") == sampler

    prompt_id, _ = comfy_server.queue_and_watch(prompt, sampling, timeout=1800)
    status, _ = comfy_server.request("POST", "/interrupt", {"prompt_id": prompt_id})
    assert status == 200
    entry = comfy_server.wait(prompt_id, timeout=1800)
    assert [m for m in entry["status"]["messages"] if m[0] == "execution_interrupted"], entry["status"]
    assert not list((comfy_server.dir("output") / "latentsync").glob("cancelled*"))
    assert comfy_server.get("/system_stats")["system"]["comfyui_version"] == "0.3.75"


def test_long_video_workflow_streams_the_file_into_a_video(comfy_server, object_info, lipsync_inputs,
                                                          lipsync_models):
    """Load Video -> LatentSync Sampler (video file) -> Save Video: no IMAGE batch anywhere; the video written is
    the clip's length with the voice, and only the node's own mp4 is left (no partial)."""
    prompt = cpu_friendly(load_prompt("latentsync_long_video.json", object_info))
    assert not {"GetVideoComponents", "CreateVideo", "LatentSyncSampler"} & {v["class_type"] for v in prompt.values()}
    sampler = node_id(prompt, "LatentSyncSampleVideo")
    prompt[sampler]["inputs"]["window"] = 8
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    assert video_of(comfy_server, history, node_id(prompt, "SaveVideo")) == (DEMO_FRAMES, 25.0)
    (note,) = history["outputs"][sampler]["latentsync_video"]
    assert note["frames"] == DEMO_FRAMES and note["generated"] == DEMO_FRAMES and note["resumed_segments"] == 0
    written = list((comfy_server.dir("output") / "latentsync").glob("long_video_*"))
    assert [p.name for p in written] == [note["file"].rsplit("/", 1)[-1]]
    with av.open(note["file"]) as container:
        assert container.streams.audio and container.streams.video[0].frames == DEMO_FRAMES


def test_long_video_cancel_keeps_the_finished_windows_and_queuing_again_resumes(comfy_server, object_info,
                                                                               lipsync_inputs, lipsync_models):
    prompt = cpu_friendly(load_prompt("latentsync_long_video.json", object_info))
    sampler = node_id(prompt, "LatentSyncSampleVideo")
    prompt[sampler]["inputs"].update(window=4, steps=3, seed=11, filename_prefix="latentsync/resumed")

    def window_done(message: dict, prompt_id: str) -> bool:  # the node's step bar passed two windows' steps: the
        data = message["data"]  # first window was written (its first bar, of the faces pass, counts the 24 frames)
        return (message["type"] == "progress" and data.get("prompt_id") == prompt_id and data.get("node") == sampler
                and data.get("max") == DEMO_FRAMES // 4 * 3 and data.get("value", 0) >= 2 * 3)

    prompt_id, _ = comfy_server.queue_and_watch(prompt, window_done, timeout=1800)
    status, _ = comfy_server.request("POST", "/interrupt", {"prompt_id": prompt_id})
    assert status == 200
    entry = comfy_server.wait(prompt_id, timeout=1800)
    assert [m for m in entry["status"]["messages"] if m[0] == "execution_interrupted"], entry["status"]
    (partial,) = (comfy_server.dir("output") / "latentsync").glob("resumed_*.mp4.partial")
    kept = sorted(p.name for p in partial.glob("0*.mp4"))
    assert 1 <= len(kept) < DEMO_FRAMES // 4

    history = comfy_server.run(prompt, timeout=1800)
    assert history["status"]["status_str"] == "success", failure(history)
    (note,) = history["outputs"][sampler]["latentsync_video"]
    assert note["resumed_segments"] == len(kept) and note["frames"] == DEMO_FRAMES
    assert not partial.exists()
    assert video_of(comfy_server, history, node_id(prompt, "SaveVideo")) == (DEMO_FRAMES, 25.0)


def test_a_vae_of_another_latent_space_is_refused_by_name(comfy_server, object_info, lipsync_inputs,
                                                        lipsync_models):
    prompt = load_prompt("latentsync_basic.json", object_info, vae="pixel_space")  # 3 channels, 1x
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "error"
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == "LatentSyncPrepareVideo"  # the first node to use the VAE (the sampler's is the same)
    assert "3 latent channels" in error["exception_message"] and "vae-ft-mse-840000" in error["exception_message"]


def test_the_cheap_vae_files_match_comfyuis_taesd(comfyui_dir):
    """The TAESD files the workflow tests use hold exactly the tensors of ComfyUI's own TAESD (its VAE loader is
    not strict, so a missing tensor would go unnoticed there)."""
    import subprocess
    import sys

    from scripts.vae_files import taesd_shapes

    code = ("import json, sys, comfy.options\n"
            "sys.argv = ['main.py', '--cpu']\n"  # ComfyUI's own CPU switch, or importing its ops looks for CUDA
            "comfy.options.enable_args_parsing()\n"
            "import comfy.taesd.taesd as t\n"
            "m = t.TAESD()\n"
            "print(json.dumps([{k: list(v.shape) for k, v in part.state_dict().items()}\n"
            "                  for part in (m.taesd_encoder, m.taesd_decoder)]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=comfyui_dir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    ours = [{k: list(v) for k, v in part.items()} for part in taesd_shapes()]
    assert ours == theirs


TWO_FRAMES = 40  # 1.6 s: the left voice speaks in the first 0.7 s, the right voice in the last 0.7 s
TWO_SCRIPT = ((1, 0.0, 0.7), (2, 0.9, 1.6))


def test_two_speakers_workflow_drives_each_face_with_its_own_voice(comfy_server, object_info, lipsync_models):
    from media import write_clip
    from two_people import stems, two_person_frames, write_wav

    frames = two_person_frames(TWO_FRAMES)
    write_clip(comfy_server.dir("input") / "latentsync_two_people.mp4", frames, 25)
    for number, samples in stems(TWO_FRAMES / 25, TWO_SCRIPT).items():
        write_wav(comfy_server.dir("input") / f"latentsync_speaker_{number}.wav", samples)
    prompt = cpu_friendly(load_prompt("latentsync_two_speakers.json", object_info))
    parts, sampler = node_id(prompt, "GetVideoComponents"), node_id(prompt, "LatentSyncSpeakersSampler")
    assign = node_id(prompt, "LatentSyncAssignFaces")
    assert prompt[assign]["inputs"]["mapping"] == "A = voice 1, B = voice 2"  # the workflow's manual mapping
    source_key, output_key = save_images(prompt, [parts, 0]), save_images(prompt, [sampler, 0])
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    assert video_of(comfy_server, history, node_id(prompt, "SaveVideo")) == (TWO_FRAMES, 25.0)
    shown = history["outputs"][assign]
    (cast,) = shown["latentsync_cast"]
    assert [(s["name"], s["faces"]) for s in cast["speakers"]] == [("voice 1", ["A"]), ("voice 2", ["B"])]
    assert shown["images"], "the keyframe with the face letters is previewed"
    faces = history["outputs"][node_id(prompt, "LatentSyncDetectFaces")]["latentsync_faces"][0]
    assert faces["tracks"] == ["A", "B"]
    sources, outputs = images_of(comfy_server, history, source_key), images_of(comfy_server, history, output_key)
    assert len(outputs) == TWO_FRAMES
    half = frames.shape[2] // 2
    for side in (slice(0, half), slice(half, None)):  # both faces were generated (silence: at rest in pauses)
        assert any(np.abs(s[:, side] - o[:, side]).max() > 0 for s, o in zip(sources, outputs))
    for source, output in zip(sources, outputs):  # the faces are in the upper half; the rest is untouched
        assert np.array_equal(source[frames.shape[1] * 3 // 4:], output[frames.shape[1] * 3 // 4:])


def test_prepare_video_feeds_the_video_file_sampler_and_is_read_back_from_its_folder(comfy_server, object_info,
                                                                                     lipsync_inputs, lipsync_models):
    """The long-video graph with Prepare Video given the same VIDEO: the mp4 equals the one made without it, frame
    for frame; once ComfyUI's cache is cleared (as in a new session) the folder it wrote is read, not made again."""
    import copy

    from latentsync.media.video import read_frames

    prompt = cpu_friendly(load_prompt("latentsync_long_video.json", object_info))
    sampler = node_id(prompt, "LatentSyncSampleVideo")
    prompt[sampler]["inputs"].update(window=8, filename_prefix="latentsync/prepared_video")
    history = comfy_server.run(copy.deepcopy(prompt), timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    (plain,) = history["outputs"][sampler]["latentsync_video"]
    given = prompt[sampler]["inputs"]
    prompt["3000"] = {"class_type": "LatentSyncPrepareVideo",
                      "inputs": {"vae": given["vae"], "model": given["model"], "video": given["video"],
                                 **{name: given[name] for name in ("detector", "select", "index", "position_x",
                                                                   "position_y", "threshold")}}}
    given["prepared"] = ["3000", 0]
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    (made,) = history["outputs"]["3000"]["latentsync_prepared"]
    assert made["made"] and made["frames"] == made["faces"] == DEMO_FRAMES
    folder = comfy_server.dir("output") / "latentsync" / "prepared"
    assert (folder / made["folder"].rsplit("/", 1)[-1] / "prepared.json").is_file()
    (note,) = history["outputs"][sampler]["latentsync_video"]
    assert note["file"] != plain["file"] and torch.equal(read_frames(note["file"])[0], read_frames(plain["file"])[0])

    comfy_server.request("POST", "/free", {"free_memory": True})  # taken after the next prompt: a cheap one
    vad = {"threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 100, "padding_ms": 30, "backend": "jit"}
    cheap = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "latentsync_demo_voice.wav"}},
             "2": {"class_type": "LatentSyncVAD", "inputs": {"audio": ["1", 0], **vad}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": "cache_cleared"}}}
    assert comfy_server.run(cheap, timeout=600)["status"]["status_str"] == "success"
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    (again,) = history["outputs"]["3000"]["latentsync_prepared"]
    assert not again["made"] and again["folder"] == made["folder"]
