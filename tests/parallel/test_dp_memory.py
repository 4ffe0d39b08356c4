"""What the train ranks hold, kept small: the gradient all-reduce in buckets (no flat copy of every
gradient), the policy versions (published a tensor at a time, one gathered parameter at a time under
FSDP; none held in memory but by the single-rank loop), glibc's fixed mmap threshold. The memory itself
is measured by tools/bench/memory.py."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from hpc_rlhf.models.export import export_policy
from hpc_rlhf.runtime.malloc import return_freed_memory
from hpc_rlhf.weights.publish import cpu_state, prune, publish, publish_model, version_folder, write_config
from hpc_rlhf.weights.versions import PolicyVersions
from tests.conftest import REPO


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_bucketed_allreduce_sums_every_gradient(mpiexec, ranks):
    worker = os.path.join(REPO, "tests", "parallel", "allreduce_worker.py")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, worker], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_policy_is_published_one_parameter_at_a_time_as_save_pretrained_writes_it(mpiexec, ranks, tmp_path):
    worker = os.path.join(REPO, "tests", "parallel", "publish_worker.py")
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [mpiexec, "-n", str(ranks), sys.executable, worker, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _llama(tied: bool = False) -> torch.nn.Module:
    conf = AutoConfig.for_model(
        "llama", vocab_size=37, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(conf)


def test_versions_hold_no_copy_and_read_older_ones_back_from_their_files(tmp_path):
    """The lead publishes a file per version and holds none in memory (the current one is the live
    model's tensors, an older one is read back from its file, bit-identical); other train ranks hold
    nothing; the single-rank loop holds the newest k + 1 versions (k = 0: the live tensors, no copy)."""
    model, run = _llama(), str(tmp_path / "run")
    lead = PolicyVersions(run, 1, model, publish_files=True, hold=True)
    lead.keep_live(0)
    assert [v for v, _ in lead.publish_initial(0)] == [0] and not lead.recent
    v0 = cpu_state(model)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # the update
    lead.add(1)
    assert lead[1]["lm_head.weight"].data_ptr() == model.lm_head.weight.data_ptr() and not lead.recent
    assert lead.older_than(1) == [0] and all(torch.equal(lead[0][k], v0[k]) for k in v0)
    lead.add(2)
    lead.add(3)  # version 0 is pruned: files from current - k - 1 on
    assert sorted(os.listdir(f"{run}/weights")) == ["config.json", "generation_config.json"] + [
        f"policy_v00000{v}.safetensors" for v in (1, 2, 3)
    ]
    with pytest.raises(KeyError):
        lead[0]
    other = PolicyVersions(run, 1, model, publish_files=False, hold=False)
    other.keep(0, cpu_state(model))
    other.keep_live(1)
    assert other.add(2).endswith(".safetensors") and not other.recent
    single = PolicyVersions(str(tmp_path / "single"), 0, model, publish_files=False)
    single.keep_live(0)
    assert single[0]["lm_head.weight"].data_ptr() == model.lm_head.weight.data_ptr()
    lagged = PolicyVersions(str(tmp_path / "single"), 1, model, publish_files=False)
    for v in range(4):
        lagged.add(v)
    assert list(lagged.recent) == [2, 3] and not os.path.exists(tmp_path / "single")  # k + 1 versions, no files


@pytest.mark.parametrize("tied", [False, True])
def test_published_versions_are_hugging_face_folders_without_a_copy(tmp_path, tied):
    """A published version is byte for byte save_pretrained's model.safetensors, its folder view and the
    final export are hard links to it (config files as save_pretrained writes them), a view is remade
    when its version is published again, and pruning removes views with their versions."""
    model, run = _llama(tied), str(tmp_path / "run")
    ref = str(tmp_path / "ref")
    model.save_pretrained(ref)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    path = publish_model(run, 5, model)
    write_config(run, model)
    view = version_folder(run, 5)
    final = export_policy(run, model, tok, weights=path)
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        assert filecmp.cmp(f"{ref}/{name}", f"{view}/{name}", shallow=False), name
        assert filecmp.cmp(f"{ref}/{name}", f"{final}/{name}", shallow=False), name
    assert os.path.samefile(path, f"{view}/model.safetensors") and os.path.samefile(path, f"{final}/model.safetensors")
    assert version_folder(run, 5) == view and os.path.samefile(path, f"{view}/model.safetensors")
    publish(run, 5, cpu_state(model))  # published again (a resume): the view follows the new file
    assert os.path.samefile(path, f"{version_folder(run, 5)}/model.safetensors")
    prune(run, 6)
    assert not os.path.exists(view) and not os.path.exists(path) and os.path.exists(f"{final}/model.safetensors")
    with pytest.raises(FileNotFoundError):
        version_folder(run, 5)


def test_fixed_mmap_threshold_returns_freed_tensors():
    """Tensors freed between live ones (holes an arena could not trim) leave the resident set."""
    assert return_freed_memory()  # glibc (CI's Linux)

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024

    for _ in range(2):  # the second round is the one glibc's own threshold would serve from an arena
        ts = [torch.ones(1 << 20) for _ in range(64)]  # 64 x 4 MiB
        full = rss_mib()
        del ts[::2]
        assert full - rss_mib() > 100  # 128 MiB freed
        del ts
