"""LatentSync lip-sync nodes for ComfyUI (V3 schema).

The node modules are imported only when ComfyUI asks for the extension; heavy libraries (silero-vad,
onnxruntime, scipy, PyAV) load when a node first runs.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import LatentSyncExtension

    return LatentSyncExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
