"""DINO and CLIP on several processes (CPU, gloo): the data is sharded, every rank's RNG is
checkpointed, one process writes and prints; N processes of batch B follow one process of batch
N x B (DINO: the all-reduced centre and the EMA of the unwrapped student; CLIP: the contrastive loss
over the embeddings gathered from every rank, with their gradients). FSDP: accelerate shards only on
GPUs, so the FSDP2 path is checked with torch's `fully_shard` itself and the trainers refuse FSDP on CPU."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lastvit.training.dino import DINOHead, DINOLoss, DINOModel, update_teacher
from lastvit.training.dino_trainer import DINOTrainingArguments, train_dino
from lastvit.training.pretraining import PretrainingError
from modeling_lastvit import LastViTModel

from .tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def torchrun(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`module` on 2 CPU processes (gloo), as `accelerate launch` would start them on 2 GPUs
    (accelerate's own multi-CPU launcher needs MPI); a free port is picked (--standalone)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module]
    return subprocess.run(
        [*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False, env=env
    )


def spawn(function, *args) -> None:
    """``function(rank, 2, store, *args)`` on 2 gloo processes that rendezvous through the file `store`."""
    import torch.multiprocessing as mp

    mp.spawn(_run_then_exit, args=(function, 2, *args), nprocs=2, join=True)


def _run_then_exit(rank, function, *args) -> None:
    """Run a rank, then leave without Python's teardown: freeing a DDP reducer after
    `destroy_process_group` joins gloo's worker thread while holding the GIL, and that thread may
    need the GIL to free the last collective's tensors, a deadlock that hangs the test. An exception
    still reaches `mp.spawn` as a failure."""
    function(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def init_gloo(rank: int, world: int, store: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


# DINO
# ------------------------------------------------------------------------------------------------

DINO_FLAGS = dict(
    scenes_train=24,
    scenes_test=12,
    image_size=32,
    epochs=1,
    num_local_crops=2,
    out_dim=32,
    head_hidden_dim=32,
    bottleneck_dim=16,
    learning_rate=0.05,
    warmup_ratio=0.5,
    freeze_last_layer_ratio=0.5,
    knn_k=5,
    progress=False,
)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbone") / "tiny"
    LastViTModel(tiny_config(pooling="lazystrike")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dino_two_processes(tmp_path_factory, tiny_backbone):
    out = tmp_path_factory.mktemp("dino-ddp") / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in DINO_FLAGS.items() if k != "progress"]
    result = torchrun(
        "training_scripts.train_dino",
        f"--output-dir={out}",
        f"--model-name-or-path={tiny_backbone}",
        "--batch-size=6",
        "--no-progress",
        *flags,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_two_process_dino_shards_the_data_checkpoints_every_rank_and_reports_once(dino_two_processes):
    out, result = dino_two_processes
    state = json.loads((out / "checkpoints/last/trainer_state.json").read_text())
    assert state["step"] == 2  # 24 images / (2 processes x batch 6)
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (out / "checkpoints/last").iterdir()}
    assert result.stdout.count('"final_loss"') == 1  # printed once, by the main process
    assert {"model.safetensors", "dino_head.safetensors", "eval_results.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }


def test_two_processes_of_batch_6_train_the_teacher_and_centre_of_one_process_of_batch_12(
    dino_two_processes, tiny_backbone, tmp_path
):
    """DDP averages the student gradients, the centre averages the teacher outputs over both ranks and
    the EMA reads the unwrapped student: the run equals one process on the concatenated batches."""
    two, _ = dino_two_processes
    one = tmp_path / "one"
    train_dino(
        DINOTrainingArguments(output_dir=one, model_name_or_path=str(tiny_backbone), batch_size=12, **DINO_FLAGS)
    )
    for name in ("model.safetensors", "dino_head.safetensors"):
        a, b = load_file(one / name), load_file(two / name)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    centre = [
        torch.load(f / "checkpoints/last/custom_checkpoint_1.pkl", weights_only=True)["center"] for f in (one, two)
    ]
    assert centre[0].abs().sum() > 0
    torch.testing.assert_close(centre[1], centre[0], rtol=1e-5, atol=1e-7)
    losses = [json.loads((f / "checkpoints/last/trainer_state.json").read_text())["losses"] for f in (one, two)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # each step's loss averaged over the ranks


def _tiny_dino():
    torch.manual_seed(0)
    return DINOModel(LastViTModel(tiny_config(pooling="lazystrike")), DINOHead(32, 16, 32, 8))


def _crops():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 32, 32, generator=generator) for _ in range(2)] + [
        torch.randn(4, 3, 16, 16, generator=generator) for _ in range(2)
    ]


def _dino_step(student, teacher, loss_fn, crops, reduce=None):
    """One DINO step as the trainer takes it (SGD for brevity): teacher targets, student loss, step,
    EMA of the student, centre update."""
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.5)
    with torch.no_grad():
        teacher_out = teacher(crops[:2])
    loss_fn(student(crops), teacher_out, 0.04).backward()
    optimizer.step()
    update_teacher(student, teacher, 0.9)
    loss_fn.update_center(teacher_out, reduce=reduce)


def _fsdp2_rank(rank, world, store, out):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    init_gloo(rank, world, store)
    student = _tiny_dino()
    teacher = copy.deepcopy(student).requires_grad_(False)
    for layer in student.backbone.encoder.layer:  # accelerate's TRANSFORMER_BASED_WRAP on LastViTLayer
        fully_shard(layer)
    fully_shard(student)
    assert isinstance(student.head.mlp[0].weight, DTensor)

    def mean(x):
        dist.all_reduce(x)
        return x / world

    loss_fn = DINOLoss(16)
    _dino_step(student, teacher, loss_fn, [c.chunk(world)[rank] for c in _crops()], reduce=mean)
    if rank == 0:
        torch.save({"teacher": teacher.state_dict(), "center": loss_fn.center}, out)
    dist.barrier()  # no rank tears down while another still talks
    dist.destroy_process_group()


def test_fsdp2_sharded_student_gives_the_teacher_and_centre_of_one_process(tmp_path):
    """Under FSDP2 the student's parameters are shards (DTensors): the EMA reads them whole, so the
    teacher, kept full on every process, gets what one unsharded process on the whole batch gives."""
    spawn(_fsdp2_rank, tmp_path / "store", tmp_path / "fsdp2.pt")
    sharded = torch.load(tmp_path / "fsdp2.pt", weights_only=True)
    student = _tiny_dino()
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(16)
    _dino_step(student, teacher, loss_fn, _crops())
    expected = teacher.state_dict()
    assert any(not torch.equal(expected[k], _tiny_dino().state_dict()[k]) for k in expected)  # the step moved it
    for key, value in expected.items():
        torch.testing.assert_close(sharded["teacher"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(sharded["center"], loss_fn.center, rtol=1e-5, atol=1e-7)


def test_an_fsdp_config_on_cpu_is_refused_with_the_ddp_alternative(tmp_path, tiny_backbone):
    """accelerate would silently run DDP instead of the FSDP the config asks for."""
    from lastvit.training.loop import reset_accelerate

    os.environ["ACCELERATE_USE_FSDP"] = "true"
    try:
        with pytest.raises(PretrainingError, match=r"asks for FSDP.*shards only on GPUs.*torchrun"):
            train_dino(
                DINOTrainingArguments(
                    output_dir=tmp_path / "run", model_name_or_path=str(tiny_backbone), batch_size=6, **DINO_FLAGS
                )
            )
    finally:
        del os.environ["ACCELERATE_USE_FSDP"]
        reset_accelerate()


# CLIP
# ------------------------------------------------------------------------------------------------

CAPTIONS = [f"a photo of a {c} on {b}." for c in ("bird", "mammal", "vehicle", "fish") for b in ("sand", "pine")]


def _tiny_clip_batch():
    from lastvit.clip.captions import tokenize, train_word_tokenizer
    from modeling_lastvit import LastViTCLIPModel

    from .tiny import tiny_clip_config

    tokenizer = train_word_tokenizer(CAPTIONS)
    torch.manual_seed(0)
    model = LastViTCLIPModel(tiny_clip_config(tokenizer))
    batch = tokenize(tokenizer, CAPTIONS, 32)
    batch["pixel_values"] = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return model, batch


def _clip_ddp_rank(rank, world, store, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lastvit.clip.contrastive import ContrastiveEmbedder, contrastive_loss

    init_gloo(rank, world, store)
    model, batch = _tiny_clip_batch()
    mine = {k: v.chunk(world)[rank] for k, v in batch.items()}
    embedder = DistributedDataParallel(ContrastiveEmbedder(model))
    loss = contrastive_loss(*embedder(mine["pixel_values"], mine["input_ids"], mine["attention_mask"]))
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": mean_loss / world, "grads": grads}, out)
    dist.barrier()  # no rank tears down while another still talks
    dist.destroy_process_group()


def test_two_rank_clip_loss_and_gradients_equal_one_process_on_the_concatenated_batch(tmp_path):
    """Each rank's 4 pairs meet the 4 of the other rank as negatives (embeddings gathered with their
    gradients): the mean loss and the DDP-averaged gradients are those of the model's own loss on all 8."""
    spawn(_clip_ddp_rank, tmp_path / "store", tmp_path / "ddp.pt")
    two = torch.load(tmp_path / "ddp.pt", weights_only=True)
    model, batch = _tiny_clip_batch()
    loss = model(**batch, return_loss=True).loss
    loss.backward()
    torch.testing.assert_close(two["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert two["grads"].keys() == grads.keys() and "logit_scale" in grads
    for name, grad in grads.items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_two_process_clip_shards_the_data_reports_once_and_matches_one_process_of_twice_the_batch(tmp_path):
    from lastvit.clip.training import CLIPTrainingArguments, train_clip

    flags = dict(scenes_train=32, scenes_test=16, image_size=32, epochs=1, progress=False)
    two = tmp_path / "two"
    result = torchrun(
        "training_scripts.train_clip",
        f"--output-dir={two}",
        "--batch-size=8",
        "--no-progress",
        *[f"--{k.replace('_', '-')}={v}" for k, v in flags.items() if k != "progress"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"zero_shot_top1"') == 1  # printed once, by the main process
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (two / "checkpoints/last").iterdir()}
    one = tmp_path / "one"
    train_clip(CLIPTrainingArguments(output_dir=one, batch_size=16, **flags))
    states = [json.loads((f / "checkpoints/last/trainer_state.json").read_text()) for f in (one, two)]
    assert states[1]["step"] == states[0]["step"] == 2  # 32 pairs / (2 processes x batch 8)
    # step 1's loss scores each pair against all 16 (8 per process would give a smaller loss)
    assert states[1]["losses"] == pytest.approx(states[0]["losses"], rel=1e-5)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)


# Mixed precision
# ------------------------------------------------------------------------------------------------


def test_both_trainers_run_with_bf16_autocast_on_the_cpu(tmp_path, tiny_backbone):
    from lastvit.clip.training import CLIPTrainingArguments, train_clip
    from lastvit.training.loop import reset_accelerate

    small = dict(scenes_train=8, scenes_test=4, image_size=32, epochs=1, progress=False, mixed_precision="bf16")
    reset_accelerate()  # this process's earlier runs set up accelerate without mixed precision
    try:
        clip = train_clip(CLIPTrainingArguments(output_dir=tmp_path / "clip", batch_size=8, **small))
        reset_accelerate()
        dino = train_dino(
            DINOTrainingArguments(
                output_dir=tmp_path / "dino",
                model_name_or_path=str(tiny_backbone),
                batch_size=4,
                **{**DINO_FLAGS, **small, "knn_k": 2},
            )
        )
    finally:
        reset_accelerate()
    for results, folder in ((clip, "clip"), (dino, "dino")):
        assert results["step"] >= 1 and math.isfinite(results["final_loss"]), folder
        assert "bf16" in (tmp_path / folder / "README.md").read_text()  # the card's training arguments


def test_a_killed_and_resumed_two_process_dino_run_ends_where_the_uninterrupted_one_does(
    dino_two_processes, tiny_backbone, tmp_path
):
    full, _ = dino_two_processes
    out = tmp_path / "resumed"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in DINO_FLAGS.items() if k != "progress"]
    common = [
        f"--output-dir={out}",
        f"--model-name-or-path={tiny_backbone}",
        "--batch-size=6",
        "--no-progress",
        *flags,
    ]
    for extra in (["--save-every=1", "--stop-after=1"], ["--resume"]):
        result = torchrun("training_scripts.train_dino", *common, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "dino_head.safetensors"):
        a, b = load_file(full / name), load_file(out / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    states = [json.loads((f / "checkpoints/last/trainer_state.json").read_text()) for f in (full, out)]
    assert states[0]["losses"] == states[1]["losses"]
