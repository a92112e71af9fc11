"""Third-party block plugins: a real installed package, a broken one, a duplicate name, and an in-memory registry.

The subprocess tests run ``python -m crmlab.cli`` with plugin directories prepended to ``PYTHONPATH``, so entry-point
discovery sees them exactly as it would see packages installed by pip. Each subprocess imports TensorFlow (~5 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_PKG = REPO / "tests" / "fixtures" / "plugin_pkg"
USES_PLUGIN = "tests/fixtures/plugin_pkg/uses_plugin.yaml"

# uses_plugin.yaml by hand: gated_conv1d(filters 8, kernel 3) on 5 one-hot channels is two Conv1D of
# 3 * 5 * 8 + 8 = 128 each; mlp_head flattens 112 * 8 = 896 -> Dense(8) 896 * 8 + 8 = 7,176 -> Dense(1) 8 + 1 = 9.
USES_PLUGIN_PARAMS = 2 * (3 * 5 * 8 + 8) + (112 * 8 * 8 + 8) + (8 + 1)


def crmlab(*args: str, path: list[Path], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run the ``crmlab`` CLI in a fresh interpreter (in ``cwd``) with ``path`` prepended to ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, "-m", "crmlab.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fake_dist(root: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    """Write a minimal installed-distribution record (``*.dist-info``) declaring ``crmlab.blocks`` entry points."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[crmlab.blocks]\n{lines}")


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crmlab-demo-plugin, pip-installed (from a copy, so no build litter lands in the repo) into a target dir."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(PLUGIN_PKG, tmp / "src")
    target = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [*pip, "--target", str(target), str(src)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (target / "crmlab_demo_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """broken-plugin 0.1: its entry point ``bad_block`` names a module that raises ImportError when imported."""
    root = tmp_path_factory.mktemp("broken")
    fake_dist(root, "broken-plugin", "0.1", {"bad_block": "broken_plugin_mod:Thing"})
    (root / "broken_plugin_mod.py").write_text('raise ImportError("needs libfoo")\n')
    return root


@pytest.fixture(scope="module")
def listing(plugin_dir: Path, broken_dir: Path) -> subprocess.CompletedProcess[str]:
    """One ``crmlab blocks`` run that sees both the demo plugin and the broken one."""
    return crmlab("blocks", path=[plugin_dir, broken_dir])


def section(stdout: str, title: str) -> str:
    """The lines of ``crmlab blocks`` output from the header starting with ``title`` up to the next header."""
    out: list[str] = []
    for line in stdout.splitlines():
        if out and not line.startswith(" "):
            break
        if line.startswith(title) or out:
            out.append(line)
    return "\n".join(out)


def test_blocks_lists_installed_plugin(listing: subprocess.CompletedProcess[str]) -> None:
    assert listing.returncode == 0, listing.stderr
    blocks = section(listing.stdout, "blocks (")
    assert "  gated_conv1d  (x) -> (out)" in blocks
    entry = blocks.split("  gated_conv1d  ", 1)[1]
    origin = next(line for line in entry.splitlines() if line.strip().startswith("origin:"))
    assert "crmlab-demo-plugin 0.1.0" in origin
    assert "crmlab_demo_plugin:GatedConv1D" in origin
    assert "filters: int" in entry and "kernel_size: int = 3" in entry


def test_blocks_survives_broken_plugin(listing: subprocess.CompletedProcess[str]) -> None:
    assert listing.returncode == 0, listing.stderr
    assert "Traceback" not in listing.stdout + listing.stderr
    blocks = section(listing.stdout, "blocks (")
    assert "  se_conv_encoder  " in blocks and "  mlp_head  " in blocks  # the built-ins still load
    assert "bad_block" not in blocks
    failed = section(listing.stdout, "failed block plugins (")
    assert failed.startswith("failed block plugins (1):"), listing.stdout
    assert "bad_block" in failed and "broken-plugin 0.1" in failed
    assert "ImportError: needs libfoo" in failed


def test_build_with_installed_plugin(plugin_dir: Path) -> None:
    run = crmlab("build", USES_PLUGIN, path=[plugin_dir])
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith("uses_plugin: "), run.stdout
    total = int(summary.split(": ", 1)[1].split(" total parameters", 1)[0].replace(",", ""))
    assert total == USES_PLUGIN_PARAMS == 7441
    assert "(7,441 trainable, 0 non-trainable)" in summary


def test_build_with_broken_plugin_is_one_line(broken_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "uses_broken.yaml"
    spec.write_text(
        "name: uses_broken\n"
        "inputs:\n  seq: {shape: [112], dtype: int32}\n"
        "nodes:\n  onehot: {block: onehot_input, inputs: [seq]}\n  bad: {block: bad_block, inputs: [onehot]}\n"
        "outputs: [bad]\n"
    )
    run = crmlab("build", str(spec), path=[broken_dir])
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"{spec}: nodes.bad.block: ")
    assert "bad_block" in lines[0] and "failed to load" in lines[0]
    assert "ImportError: needs libfoo" in lines[0]


def test_plugin_with_old_import_gets_a_hint(tmp_path: Path) -> None:
    """A plugin written for the old top-level names (``from blocks.base import ...``) is listed as failed, with the
    new import; run outside the repository, where no top-level ``blocks`` folder is importable."""
    site = tmp_path / "site"
    fake_dist(site, "old-plugin", "0.1", {"old_block": "old_plugin_mod:Thing"})
    (site / "old_plugin_mod.py").write_text("from blocks.base import Block, block\n")
    run = crmlab("blocks", path=[site], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    failed = section(run.stdout, "failed block plugins (")
    assert "old_block" in failed and "old-plugin 0.1" in failed
    assert "it imports 'blocks', which is now 'crmlab.blocks' (use: from crmlab.blocks import Block, block)" in failed


def test_duplicate_block_name_is_one_line(tmp_path: Path) -> None:
    fake_dist(tmp_path, "dup-plugin", "0.2", {"se_block": "crmlab.blocks.conv:SEBlock"})
    run = crmlab("blocks", path=[tmp_path])
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "'se_block'" in lines[0] and "registered twice" in lines[0]
    assert "crmlab 0.1.0" in lines[0] and "dup-plugin 0.2" in lines[0]


def test_assemble_with_in_memory_registry() -> None:
    import keras

    from crmlab.blocks.assemble import assemble, parameter_counts
    from crmlab.blocks.base import Block, block
    from crmlab.blocks.sequence import OneHotInput
    from crmlab.registry import Registry, SpecErrors, parse_graph

    @block(package="crmlab_tests")
    class ChannelScale(Block):
        """Multiply each channel by a learned factor.

        Args:
            init: initial factor.

        Input shape: ``(batch, length, channels)``. Output shape: the same.
        """

        def __init__(self, init: float = 1.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.init = init

        def create(self, input_shape: Any) -> None:
            self.scale = self.add_weight(
                shape=(int(input_shape[-1]),), initializer=keras.initializers.Constant(self.init)
            )

        def call(self, x: Any, training: bool | None = None) -> Any:
            return x * self.scale

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "init": self.init}

    reg = Registry()
    reg.register("onehot_input", OneHotInput)
    reg.register("channel_scale", ChannelScale, origin="in-memory test plugin")
    assert reg.names() == ["channel_scale", "onehot_input"]
    assert reg.origin("channel_scale") == "in-memory test plugin"

    doc: dict[str, Any] = {
        "name": "scaled",
        "inputs": {"seq": {"shape": [16], "dtype": "int32"}},
        "nodes": {
            "onehot": {"block": "onehot_input", "inputs": ["seq"]},
            "scale": {"block": "channel_scale", "inputs": ["onehot"], "params": {"init": 2.0}},
        },
        "outputs": ["scale"],
    }
    model = assemble(parse_graph(doc, "x.yaml"), blocks=reg)
    layer = model.get_layer("scale")
    assert isinstance(layer, ChannelScale) and layer.init == 2.0
    assert tuple(model.output.shape) == (None, 16, 5)
    assert parameter_counts(model) == {"total": 5, "trainable": 5, "non_trainable": 0}
    y = keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor([[1, 2, 3, 4, 0] * 3 + [9]], dtype="int32")))
    assert y.shape == (1, 16, 5) and y[0, 0].tolist() == [0.0, 2.0, 0.0, 0.0, 0.0] and y[0, 15, 0] == 2.0

    # The registry's type hints are checked before anything is built, with the key path of the bad value.
    doc["nodes"]["scale"]["params"] = {"init": "big"}
    with pytest.raises(SpecErrors, match=r"^x\.yaml: nodes\.scale\.params\.init: channel_scale expects float"):
        assemble(parse_graph(doc, "x.yaml"), blocks=reg)


def test_installed_plugin_passes_its_own_tests_with_the_crmlab_kit(plugin_dir: Path, tmp_path: Path) -> None:
    """The demo plugin's test file, run by pytest outside the repository with the installed plugin on PYTHONPATH
    (its entry points stay out of this process), calls ``crmlab.blocks.testing.check_block`` on both backends."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    test_file = shutil.copy(PLUGIN_PKG / "test_plugin.py", tmp_path / "test_plugin.py")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), test_file],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
