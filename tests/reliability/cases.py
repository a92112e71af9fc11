"""The bad-input catalogue: one row per malformed input a user can hand ``crmlab``.

A row names the command, what it breaks (``edits`` of dotted keys in the study, whole ``files`` written into the
workspace, extra ``flags``) and the one stderr line the user must see: ``where`` is the line's start (a workspace-
relative file and key path, or a flag) and ``message`` a substring of the rest. Workspace-relative files are written
as they are printed, e.g. ``studies/../data/x.tsv`` for a data path given as ``../data/x.tsv`` in a study.

To add a surface (e.g. ``crmlab search``), add rows with its command; ``test_catalogue.py`` runs every row through
``crmlab.cli.main`` with ``--runs-dir`` and a temporary SQLite ``--tracking-uri`` and checks nothing was written.
"""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry import yamlio
from registry.spec import load_graph
from registry.validate import resolve_graph
from tests.reliability.workspace import DELETE, FIXTURES

TRAIN, ABLATION, GRAPH = "studies/train.yaml", "studies/ablation.yaml", "studies/tiny_graph.yaml"
HEADER = "seq\texpression\n"
SHAPE_MISMATCH = (FIXTURES / "bad_specs" / "20_shape_mismatch_skip.yaml").read_text()
EXPLICIT_TINY = yamlio.dumps(resolve_graph(load_graph(FIXTURES / "studies" / "tiny_graph.yaml")).to_dict())
SEQ = "TGCATTTTTTTCACATCGTTATAGGTAGATGACGAAGGTAAGCCCCTTTCCCGGTAGTTACAACTAGTAAGGGTATAGATTTGGTTACGGCTGTT"
ROWS = f"{SEQ}\t1.5\n" * 40
"""Good rows after a case's bad one, so a file is big enough to split and the bad row is what fails."""


@dataclass(frozen=True)
class Case:
    """One malformed input and the error it must give.

    Attributes:
        name: the test id.
        command: ``train``, ``ablate``, ``compare`` or ``build``.
        where: start of the error line: ``FILE: key.path`` (FILE relative to the workspace), ``FILE:LINE`` or a flag.
        message: a substring of the rest of the line.
        edits: dotted key -> value edits of the study file (``DELETE`` removes the key).
        files: workspace-relative path -> text or bytes to write before running.
        flags: extra command-line arguments.
        study: the study (or spec) file given to the command; defaults by command.
    """

    name: str
    command: str
    where: str
    message: str
    edits: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    study: str | None = None

    @property
    def target(self) -> str:
        if self.study is not None:
            return self.study
        return {"train": TRAIN, "build": GRAPH}.get(self.command, ABLATION)


def _data(name: str, content: str | bytes, **source: Any) -> dict[str, Any]:
    """Edits + files that point the train study's fine-tuning data set at a new file ``data/NAME``."""
    return {
        "edits": {"data.random_library": {"path": f"../data/{name}", **source}},
        "files": {f"data/{name}": content},
    }


def data_case(name: str, file: str, content: str | bytes, where: str, message: str, **source: Any) -> Case:
    """A train case whose fine-tuning data file is ``content``; ``where`` is relative to that file's label."""
    return Case(name, "train", f"studies/../data/{file}{where}", message, **_data(file, content, **source))


CASES: list[Case] = [
    # ---------------------------------------------------------------------------------------- train study keys
    Case("train-unknown-top-key", "train", f"{TRAIN}: epochz", "unknown key 'epochz'", {"epochz": 3}),
    Case("train-missing-graph", "train", f"{TRAIN}: graph", "is required", {"graph": DELETE}),
    Case("train-name-not-string", "train", f"{TRAIN}: name", "valid string", {"name": ["a"]}),
    Case("train-kind-ablation", "train", f"{TRAIN}: kind", "'train'", {"kind": "ablation"}),
    Case("train-graph-file-missing", "train", f"{TRAIN}: graph", "no such file", {"graph": "nope.yaml"}),
    Case("train-recipe-file-missing", "train", f"{TRAIN}: recipe", "no such file", {"recipe": "nope.yaml"}),
    Case(
        "train-recipe-file-not-mapping",
        "train",
        f"{TRAIN}: recipe",
        "must hold a mapping",
        {"recipe": "r.yaml"},
        {"studies/r.yaml": "- 1\n- 2\n"},
    ),
    Case("train-study-is-a-list", "train", TRAIN, "must be a mapping", files={TRAIN: "- kind: train\n"}),
    Case("train-study-empty", "train", TRAIN, "empty", files={TRAIN: "# nothing\n"}),
    Case("train-study-missing", "train", "studies/none.yaml", "no such file", study="studies/none.yaml"),
    Case("train-study-is-folder", "train", "studies", "cannot read", study="studies"),
    Case("train-yaml-syntax", "train", f"{TRAIN}:3", "invalid YAML", files={TRAIN: "kind: train\nname: [a\n"}),
    Case("train-duplicate-key", "train", f"{TRAIN}:2", "duplicate key 'name'", files={TRAIN: "name: a\nname: b\n"}),
    Case(
        "train-unknown-stage-data",
        "train",
        f"{TRAIN}: recipe.stages.0.data",
        "no data set 'dreem'",
        {"recipe.stages.0.data": "dreem"},
    ),
    Case(
        "train-group-split-without-groups",
        "train",
        f"{TRAIN}: recipe.stages.1.split.method",
        "needs data.random_library.group_column",
        {"recipe.stages.1.split": {"method": "group"}},
    ),
    Case(
        "train-monitor-typo",
        "train",
        f"{TRAIN}: recipe.early_stopping.monitor",
        "did you mean",
        {"recipe.early_stopping.monitor": "val_r2_score"},
    ),
    Case(
        "train-batch-size-zero",
        "train",
        f"{TRAIN}: recipe.batch_size",
        "greater than or equal to 1",
        {"recipe.batch_size": 0},
    ),
    Case(
        "train-epochs-string",
        "train",
        f"{TRAIN}: recipe.stages.0.epochs",
        "valid integer",
        {"recipe.stages.0.epochs": "ten"},
    ),
    Case("train-no-stages", "train", f"{TRAIN}: recipe.stages", "at least 1", {"recipe.stages": []}),
    Case(
        "train-duplicate-stage-name",
        "train",
        f"{TRAIN}: recipe.stages.1.name",
        "used twice",
        {"recipe.stages.1.name": "pretrain"},
    ),
    Case(
        "train-schedule-kind-typo",
        "train",
        f"{TRAIN}: recipe.schedule.kind",
        "'cosine'",
        {"recipe.schedule.kind": "cosin"},
    ),
    Case(
        "train-validation-fraction",
        "train",
        f"{TRAIN}: recipe.stages.1.split.validation_fraction",
        "less than 1",
        {"recipe.stages.1.split": {"validation_fraction": 1.5}},
    ),
    Case(
        "train-recipe-unknown-key",
        "train",
        f"{TRAIN}: recipe.learning_rate",
        "unknown key 'learning_rate'",
        {"recipe.learning_rate": 0.001},
    ),
    Case(
        "train-python-tag",
        "train",
        f"{TRAIN}:1",
        "tags are not allowed",
        files={TRAIN: "name: !!python/object/apply:os.system ['true']\n"},
    ),
    Case(
        "train-where-missing-column",
        "train",
        "studies/../data/native_head200.tsv: test_sets.native.where.subset",
        "no column 'subset'",
        {"test_sets.native.where": {"subset": "x"}},
    ),
    Case(
        "train-data-file-missing",
        "train",
        "studies/../data/nope.tsv: data.dream.path",
        "no such file",
        {"data.dream.path": "../data/nope.tsv"},
    ),
    Case(
        "train-data-path-is-folder",
        "train",
        "studies/../data/sub.tsv: data.dream.path",
        "is a directory",
        {"data.dream.path": "../data/sub.tsv"},
        {"data/sub.tsv/": ""},
    ),
    Case("train-data-format-unknown", "train", f"{TRAIN}: data.dream.format", "'auto'", {"data.dream.format": "xlsx"}),
    Case(
        "train-data-unknown-key",
        "train",
        f"{TRAIN}: data.dream.colum",
        "unknown key 'colum'",
        {"data.dream.colum": "seq"},
    ),
    Case(
        "train-graph-shape-mismatch",
        "train",
        "studies/shape.yaml: nodes.dec2",
        "cannot take inputs",
        {"graph": "shape.yaml"},
        {"studies/shape.yaml": SHAPE_MISMATCH},
    ),
    Case(
        "train-graph-block-import-path",
        "train",
        f"{GRAPH}: nodes.x.block",
        "no block 'os.system'",
        files={GRAPH: "inputs: {seq: {shape: [112]}}\nnodes: {x: {block: os.system, inputs: [seq]}}\noutputs: [x]\n"},
    ),
    # ----------------------------------------------------------------------------------------------- data files
    data_case(
        "data-sequence-column-missing",
        "a.tsv",
        "sequence\texpression\nACGT\t1\n",
        ": data.random_library.sequence_column",
        "no column 'seq'",
    ),
    data_case(
        "data-value-column-missing",
        "a.tsv",
        "seq\texpr\nACGT\t1\n",
        ": data.random_library.value_column",
        "no column 'expression'",
    ),
    data_case("data-non-acgtn", "a.tsv", f"{HEADER}ACGTXACGT\t2\n{ROWS}", ":2", "'X' at position 5"),
    data_case("data-empty-file", "a.tsv", "", "", "file is empty"),
    data_case("data-header-only", "a.tsv", HEADER, "", "only a header"),
    data_case("data-nan-value", "a.tsv", f"{HEADER}{SEQ}\tnan\n{ROWS}", ":2", "non-numeric value"),
    data_case("data-empty-value", "a.tsv", f"{HEADER}{SEQ}\t\n{ROWS}", ":2", "empty or non-numeric"),
    data_case("data-inf-value", "a.tsv", f"{HEADER}{SEQ}\tinf\n{ROWS}", ":2", "non-finite"),
    data_case("data-value-beyond-float32", "a.tsv", f"{HEADER}{SEQ}\t1e39\n{ROWS}", ":2", "beyond float32 range"),
    data_case("data-gz-not-gzip", "a.tsv.gz", f"{HEADER}{SEQ}\t1\n", "", "not a gzip file"),
    data_case(
        "data-gz-truncated", "a.tsv.gz", gzip.compress(f"{HEADER}{SEQ}\t1\n".encode() * 50)[:60], "", "corrupt gzip"
    ),
    data_case("data-bzip2-named-tsv", "a.tsv", bz2.compress(f"{HEADER}{SEQ}\t1\n".encode()), "", "bzip2"),
    data_case("data-xz-suffix", "a.tsv.xz", b"", ": data.random_library.path", "xz compression is not supported"),
    data_case("data-binary", "a.tsv", b"seq\texpression\n\xff\xfe\x00\x01", ":2", "not UTF-8"),
    data_case("data-ragged-row", "a.tsv", f"{HEADER}{ROWS}{SEQ}\t1\t7\n", ":42", "3 fields, but the header has 2"),
    data_case("data-duplicate-column", "a.tsv", "seq\tseq\texpression\nA\tA\t1\n", ":1", "duplicate column"),
    data_case("data-empty-sequence", "a.tsv", f"{HEADER}\t1\n{ROWS}", ":2", "empty sequence"),
    data_case(
        "data-longer-than-model",
        "a.tsv",
        f"{HEADER}{ROWS}{SEQ * 2}\t2\n",
        ":42",
        "longer than the model input (112); set data.random_library.too_long: truncate",
    ),
    Case(
        "data-too-few-rows-to-split",
        "train",
        f"{TRAIN}: recipe.stages.1.split",
        "would be empty: too few rows",
        **_data("a.tsv", f"{HEADER}{SEQ}\t1\n{SEQ}\t2\n"),
    ),
    data_case("data-fasta-without-values", "a.fa", f">s1\n{SEQ}\n", ":1", "FASTA header has no value"),
    data_case("data-fasta-no-records", "a.fa", f"{SEQ}\n", ":1", "sequence before the first '>'"),
    data_case(
        "data-unknown-suffix", "a.dat", f"{HEADER}{SEQ}\t1\n", ": data.random_library.format", "cannot tell the format"
    ),
    # ---------------------------------------------------------------------------------------- ablation studies
    Case(
        "ablate-remove-missing-node",
        "ablate",
        f"{ABLATION}: variants.bad.remove",
        "node 'trnk' does not exist",
        {"variants": {"bad": {"remove": ["trnk"]}}},
    ),
    Case(
        "ablate-unknown-shortcut",
        "ablate",
        f"{ABLATION}: leave_one_out",
        "'attention'",
        {"leave_one_out": ["attention"]},
    ),
    Case(
        "ablate-variant-named-canonical",
        "ablate",
        f"{ABLATION}: variants.canonical",
        "is taken",
        {"variants": {"canonical": {"se": False}}},
    ),
    Case("ablate-no-seeds", "ablate", f"{ABLATION}: seeds", "at least 1", {"seeds": []}),
    Case("ablate-seed-string", "ablate", f"{ABLATION}: seeds.0", "valid integer", {"seeds": ["a"]}),
    Case("ablate-no-test-sets", "ablate", f"{ABLATION}: test_sets", "at least 1", {"test_sets": {}}),
    Case(
        "ablate-variant-recipe-type",
        "ablate",
        f"{ABLATION}: variants.bad.recipe.batch_size",
        "valid integer",
        {"variants": {"bad": {"set": {"recipe.batch_size": "big"}}}},
    ),
    Case(
        "ablate-patch-unknown-key",
        "ablate",
        f"{ABLATION}: variants.bad.sett",
        "unknown key 'sett'",
        {"variants": {"bad": {"sett": {"recipe.seed": 1}}}},
    ),
    Case(
        "ablate-replace-unknown-block",
        "ablate",
        f"{ABLATION}: variants.bad",
        "no block 'os:system'",
        {
            "graph": "explicit.yaml",
            "leave_one_out": [],
            "variants": {"bad": {"replace": {"head": {"block": "os:system"}}}},
        },
        {"studies/explicit.yaml": EXPLICIT_TINY},
    ),
    Case("ablate-kind-train", "ablate", f"{ABLATION}: kind", "'ablation'", {"kind": "train"}),
    Case(
        "ablate-impossible-depth",
        "ablate",
        f"{ABLATION}: variants.bad.template.params.depth",
        "not divisible",
        {"variants": {"bad": {"set": {"template.params.depth": 6}}}},
    ),
    Case(
        "ablate-impossible-shape",
        "ablate",
        f"{ABLATION}: variants.bad.nodes.dec1",
        "cannot take inputs",
        {
            "graph": "explicit.yaml",
            "leave_one_out": [],
            "variants": {"bad": {"set": {"nodes.dec1.inputs": ["trunk", "enc1.skip"]}}},
        },
        {"studies/explicit.yaml": EXPLICIT_TINY},
    ),
    Case(
        "ablate-bad-test-data",
        "ablate",
        "studies/../data/t.tsv:2",
        "sequence has 'U'",
        {"test_sets.native.path": "../data/t.tsv"},
        {"data/t.tsv": f"{HEADER}ACGU\t1\n"},
    ),
    Case("compare-unfinished", "compare", ABLATION, "run(s) not finished"),
    # -------------------------------------------------------------------------------------------------- flags
    Case(
        "set-index-out-of-range",
        "train",
        "--set: recipe.stages.7.epochs",
        "not an index",
        flags=("--set", "recipe.stages.7.epochs=1"),
    ),
    Case("set-without-equals", "train", "--set", "expected KEY=VALUE", flags=("--set", "recipe")),
    Case(
        "set-unknown-key", "train", "--set: recipe.epochz", "unknown key 'epochz'", flags=("--set", "recipe.epochz=1")
    ),
    Case("set-into-a-scalar", "train", "--set: recipe.seed.x", "not a mapping", flags=("--set", "recipe.seed.x=1")),
    Case(
        "set-bad-yaml-value",
        "train",
        "--set recipe.batch_size:1",
        "invalid YAML",
        flags=("--set", "recipe.batch_size=[1"),
    ),
    Case(
        "set-ablation-missing-variant-key",
        "ablate",
        "--set: variants.narrow_head.sett",
        "unknown key 'sett'",
        flags=("--set", "variants.narrow_head.sett=1"),
    ),
    Case(
        "tracking-uri-unreachable",
        "train",
        "--tracking-uri",
        "cannot use MLflow tracking store",
        flags=("--tracking-uri", "http://127.0.0.1:9"),
    ),
    Case(
        "tracking-uri-unknown-scheme",
        "train",
        "--tracking-uri",
        "cannot use MLflow tracking store",
        flags=("--tracking-uri", "nosuch://x"),
    ),
    Case(
        "tracking-uri-sqlite-under-a-file",
        "ablate",
        "--tracking-uri",
        "cannot use MLflow tracking store",
        files={"runsfile": "x"},
        flags=("--tracking-uri", "sqlite:///runsfile/mlflow.db"),
    ),
    Case(
        "runs-dir-is-a-file",
        "train",
        "--runs-dir",
        "not a folder",
        files={"runsfile": "x"},
        flags=("--runs-dir", "runsfile"),
    ),
    Case(
        "runs-dir-under-a-file",
        "ablate",
        "--runs-dir",
        "not a folder",
        files={"runsfile": "x"},
        flags=("--runs-dir", "runsfile/runs"),
    ),
    Case("backend-unknown", "train", "crmlab train: --backend", "invalid choice", flags=("--backend", "torch")),
    Case("verbose-out-of-range", "train", "crmlab train: --verbose", "invalid choice", flags=("--verbose", "7")),
    Case("jobs-zero", "ablate", "crmlab ablate: --jobs", "positive integer", flags=("--jobs", "0")),
    Case("jobs-not-a-number", "ablate", "crmlab ablate: --jobs", "positive integer", flags=("--jobs", "two")),
    # ---------------------------------------------------------------------------------------- graph specs
    Case(
        "build-unknown-block-module-attr",
        "build",
        f"{GRAPH}: nodes.x.block",
        "no block 'builtins:eval'",
        files={
            GRAPH: "inputs: {seq: {shape: [112]}}\nnodes: {x: {block: 'builtins:eval', inputs: [seq]}}\noutputs: [x]\n"
        },
    ),
    Case(
        "build-template-import-path",
        "build",
        f"{GRAPH}: template.name",
        "no template 'os.system'",
        {"template.name": "os.system"},
    ),
]
