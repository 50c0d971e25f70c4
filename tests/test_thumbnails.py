"""Template thumbnails: every shipped workflow has a current picture (scripts/thumbnails.py), the editor draws
distinct, non-blank pictures of different graphs, and ComfyUI serves them where the template browser looks."""
import shutil
import urllib.request

import pytest

from conftest import REPO, missing
from scripts import thumbnails

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_every_workflow_has_a_current_thumbnail_of_the_card_size(workflow):
    from PIL import Image

    jpg = thumbnails.thumbnail_path(workflow)
    remake = f"re-make it with `{thumbnails.REMAKE} {workflow.stem}`"
    assert jpg.exists(), f"{jpg.relative_to(REPO)} is missing: {remake}"
    assert thumbnails.embedded_sha256(jpg) == thumbnails.workflow_sha256(workflow), \
        f"{jpg.relative_to(REPO)} shows an older {workflow.name}: {remake}"
    with Image.open(jpg) as image:
        assert (image.format, image.size) == ("JPEG", thumbnails.THUMBNAIL_SIZE)


@pytest.fixture(scope="module")
def editor(comfy_server):
    """The editor in Debian's Chromium, as in tests/test_browser.py."""
    pytest.importorskip("playwright.sync_api")
    if shutil.which("chromium") is None:
        missing("Debian's chromium (apt-get install chromium)")
    comfy_server.request("POST", "/settings/Comfy.TutorialCompleted", True)
    with thumbnails.open_editor(comfy_server, viewport=(1400, 900)) as page:
        yield page


@pytest.mark.comfyui
@pytest.mark.browser
def test_the_editor_draws_distinct_non_blank_pictures_of_two_workflows_and_nothing_else(editor):
    import numpy as np

    settings = f"() => Object.fromEntries({list(thumbnails.VIEW_SETTINGS)}.map(id => [id, "\
               "window.app.extensionManager.setting.get(id)]))"
    before = editor.evaluate(settings)
    pictures = [np.asarray(thumbnails.render(editor, REPO / "workflows" / name).convert("L"), dtype=np.float32)
                for name in ("vad_preview.json", "latentsync_basic.json")]
    # An empty canvas is the flat background with a faint grid (a standard deviation under 2 grey levels); the
    # editor's zoom buttons (bottom right) and frame-rate text (bottom left) would sit in the corners, clear of
    # these graphs, which are wider than tall.
    for picture in pictures:
        assert picture.shape == thumbnails.THUMBNAIL_VIEW[::-1]
        assert picture.std() > 10, "the picture is nearly uniform: no graph was drawn"
        for corner in (picture[-80:, -280:], picture[-120:, :200], picture[:60, -80:]):
            assert corner.std() < 4, "something other than the graph is drawn in a corner"
    assert np.abs(pictures[0] - pictures[1]).mean() > 5, "two different graphs gave the same picture"
    assert editor.viewport_size == {"width": 1400, "height": 900}, "render() must give the page its size back"
    assert editor.evaluate(settings) == before, "render() must put the editor settings back"


@pytest.mark.comfyui
def test_the_server_serves_each_thumbnail_where_the_template_browser_looks(comfy_server):
    templates = comfy_server.get("/api/workflow_templates")
    (folder,) = [name for name, workflows in templates.items() if "latentsync_basic" in workflows]
    assert set(templates[folder]) == {w.stem for w in WORKFLOWS}
    jpg = REPO / "workflows" / "latentsync_basic.jpg"
    with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{folder}/{jpg.name}") as reply:
        assert reply.headers["Content-Type"] == "image/jpeg"
        assert reply.read() == jpg.read_bytes()
