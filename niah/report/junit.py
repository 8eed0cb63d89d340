"""JUnit XML for CI: one testsuite, one testcase per trial; FAIL and NULL are failures carrying
the answer, ERROR an error, SKIP skipped. A trial past the model's trained length carries the
property beyond_trained=true and a note in its system-out, so a CI page shows why it may fail.
A testcase is named by its cell, sample and the row label of the table (KV settings, prefill
step), and under --compare its classname names its run folder: no two trials share a name."""

from __future__ import annotations

from pathlib import Path

from ..scoring import ERROR, FAIL, NULL, SKIP
from .stats import trial_seconds
from .tables import beyond_trained, row_label


def junit(records: list[dict], path, *, name: str = "niah", runs=None) -> None:
    """Write the XML into `path` (not atomic: exports.write_exports makes it so). `runs`: the
    (folder, records) pairs of --compare, whose testcases carry their folder's name."""
    origins = [None] * len(records)
    if runs is not None:
        records = [r for _, recs in runs for r in recs]
        origins = [Path(folder).name for folder, recs in runs for _ in recs]
    import xml.etree.ElementTree as ET

    failures = sum(r["verdict"] in (FAIL, NULL) for r in records)
    errors = sum(r["verdict"] == ERROR for r in records)
    skipped = sum(r["verdict"] == SKIP for r in records)
    total_s = sum(map(trial_seconds, records))
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(records)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{total_s:.3f}",
    )
    show_step = len({r.get("prefill_step") for r in records}) > 1
    for r, origin in zip(records, origins):
        label = row_label(r, show_step=show_step)  # the table's row label: KV settings, step
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{name}.{r['model']}" + (f".{origin}" if origin else ""),
            name=f"context={r['context']} depth={r['depth']:g} sample={r['sample']}"
            + (f" {label}" if label else ""),
            time=f"{trial_seconds(r):.3f}",
        )
        if beyond_trained(r):  # properties first, system-out last (JUnit's order)
            _beyond_properties(case, r)
        if r["verdict"] in (FAIL, NULL):
            el = ET.SubElement(
                case, "failure", message=f"{r['verdict']}: expected {r['value']}", type=r["verdict"]
            )
            el.text = r.get("response") or ""
        elif r["verdict"] == ERROR:
            ET.SubElement(case, "error", message=r.get("error") or "error")
        elif r["verdict"] == SKIP:
            ET.SubElement(case, "skipped", message=r.get("error") or "skipped")
        if beyond_trained(r):
            ET.SubElement(case, "system-out").text = (
                f"context {r['context']} plus up to {r.get('max_tokens', '?')} answer tokens "
                f"is past the model's trained length of {r.get('trained_context', '?')} tokens"
            )
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _beyond_properties(case, r: dict) -> None:
    import xml.etree.ElementTree as ET

    props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="beyond_trained", value="true")
    if r.get("trained_context"):
        ET.SubElement(props, "property", name="trained_context", value=str(r["trained_context"]))
