"""The pack's licence files: LICENSE is the Apache License 2.0, and NOTICE agrees with latentsync/catalogue.py.

NOTICE's model table repeats each catalogue entry's licence string, so a model file added to the catalogue, or a
licence changed there, fails here until NOTICE says the same; non-commercial files must be in NOTICE's list of them;
the files NOTICE names as derived from other projects must exist.
"""
import re
import tomllib
from dataclasses import replace

from conftest import REPO
from latentsync.catalogue import CATALOGUE

LICENSE_TEXT = (REPO / "LICENSE").read_text(encoding="utf-8")
NOTICE_TEXT = (REPO / "NOTICE").read_text(encoding="utf-8")

APACHE_SECTIONS = ("Definitions", "Grant of Copyright License", "Grant of Patent License", "Redistribution",
                   "Submission of Contributions", "Trademarks", "Disclaimer of Warranty", "Limitation of Liability",
                   "Accepting Warranty or Additional Liability")
# NOTICE's sections, by number (see the file): 1-2 derived code, 3 the model table, 4 the non-commercial list.
DERIVED, OTHER_SOURCES, MODEL_TABLE, NON_COMMERCIAL = 1, 2, 3, 4


def words(text: str) -> str:
    """Whitespace-insensitive form, so sentences match across line breaks."""
    return " ".join(text.split())


def notice_section(notice: str, number: int) -> str:
    """The body of NOTICE's `## <number>. ...` section, up to the next `## ` heading."""
    found = re.search(rf"^## {number}\. .*?$(.*?)(?=^## |\Z)", notice, re.MULTILINE | re.DOTALL)
    assert found, f"NOTICE has no section '## {number}.'"
    return found.group(1)


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def model_rows(notice: str) -> dict[str, str]:
    """Catalogue key -> licence cell of NOTICE's model table (rows whose first cell is a backticked key)."""
    rows = {}
    for line in notice_section(notice, MODEL_TABLE).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[2]
    return rows


def is_non_commercial(licence: str) -> bool:
    licence = licence.lower()
    return "non-commercial" in licence or re.search(r"(^|-)nc(-|$)", licence) is not None


def catalogue_disagreements(catalogue, notice: str) -> list[str]:
    """Everything on which NOTICE and the catalogue differ; empty when they agree."""
    rows = model_rows(notice)
    problems = [f"{key}: no row in NOTICE's model table" for key in catalogue if key not in rows]
    problems += [f"{key}: NOTICE says {rows[key]!r}, the catalogue {model.licence!r}"
                 for key, model in catalogue.items() if key in rows and rows[key] != model.licence]
    problems += [f"{key}: NOTICE has a row for a file the catalogue does not list"
                 for key in rows if key not in catalogue]
    listed = set(backticked(notice_section(notice, NON_COMMERCIAL)))
    problems += [f"{key}: non-commercial but missing from NOTICE's non-commercial list"
                 for key, model in catalogue.items() if is_non_commercial(model.licence) and key not in listed]
    problems += [f"{key}: in NOTICE's non-commercial list, but its licence is {catalogue[key].licence!r}"
                 for key in listed if key in catalogue and not is_non_commercial(catalogue[key].licence)]
    return problems


def test_license_is_the_apache_license_2_0():
    lines = [line.strip() for line in LICENSE_TEXT.splitlines() if line.strip()]
    assert lines[:3] == ["Apache License", "Version 2.0, January 2004", "http://www.apache.org/licenses/"]
    sections = re.findall(r"^\s+(\d+)\. ([A-Z][^.]*)\.", LICENSE_TEXT, re.MULTILINE)
    assert sections == [(str(number), title) for number, title in enumerate(APACHE_SECTIONS, start=1)]
    text = words(LICENSE_TEXT)
    for sentence in (
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        ('"License" shall mean the terms and conditions for use, reproduction, and distribution as defined by '
         "Sections 1 through 9 of this document."),
        "You must give any other recipients of the Work or Derivative Works a copy of this License; and",
        "If the Work includes a \"NOTICE\" text file as part of its distribution",
        "shall any Contributor be liable to You for damages",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
        "WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.",
    ):
        assert sentence in text, sentence
    assert text.endswith("limitations under the License.")


def test_pyproject_declares_apache_2_0():
    licence = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    # Either the SPDX text, or the LICENSE file itself (which the test above pins to Apache-2.0).
    assert licence in ("Apache-2.0", {"text": "Apache-2.0"}, {"file": "LICENSE"}), licence


def test_notice_states_the_pack_licence_and_its_holder():
    text = words(NOTICE_TEXT)
    assert "Copyright" in text and "the comfyui-latentsync authors" in text
    assert "Licensed under the Apache License, Version 2.0" in text


def test_every_catalogue_file_has_its_licence_in_notice():
    assert catalogue_disagreements(CATALOGUE, NOTICE_TEXT) == []


def test_a_catalogue_entry_without_a_notice_row_is_caught():
    """The check above is not vacuous: a new entry, a changed licence or a new non-commercial file all fail it."""
    added = replace(CATALOGUE["vae"], key="new_model", licence="cc-by-nc-4.0")
    problems = catalogue_disagreements({**CATALOGUE, "new_model": added}, NOTICE_TEXT)
    assert any(problem.startswith("new_model: no row") for problem in problems), problems
    assert any(problem.startswith("new_model: non-commercial") for problem in problems), problems

    changed = {**CATALOGUE, "vae": replace(CATALOGUE["vae"], licence="apache-2.0")}
    assert any(problem.startswith("vae: NOTICE says") for problem in catalogue_disagreements(changed, NOTICE_TEXT))

    removed = {key: model for key, model in CATALOGUE.items() if key != "upscaler"}
    assert any(problem.startswith("upscaler: NOTICE has a row") for problem in
               catalogue_disagreements(removed, NOTICE_TEXT))


def test_insightface_is_listed_as_not_for_commercial_use():
    assert is_non_commercial(CATALOGUE["insightface"].licence)
    assert "insightface" in backticked(notice_section(NOTICE_TEXT, NON_COMMERCIAL))


def test_every_file_notice_names_as_derived_exists():
    named = [path for number in (DERIVED, OTHER_SOURCES)
             for path in backticked(notice_section(NOTICE_TEXT, number))]
    assert len(named) >= 10, named  # the sections name the pack's files in backticks
    missing = [path for path in named if not (REPO / path).is_file()]
    assert missing == [], f"NOTICE names files that are not in the repository: {missing}"
