"""Stored ``args`` and the non-model entries of a legacy Megatron ``model_optim_rng.pt``, in both
flavours: stock Megatron's ``argparse.Namespace`` and RLinf's OmegaConf ``DictConfig``."""

from __future__ import annotations

import argparse
import random
import signal
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from tests.factories.megatron import MegatronLayout, _Dims


def _enums() -> dict[str, Any]:
    from tests.factories.megatron import megatron_enums

    return megatron_enums()


def args_dict(layout: MegatronLayout, d: _Dims, config: dict[str, Any]) -> dict[str, Any]:
    rows = layout.padded_vocab or d.vocab
    values: dict[str, Any] = {
        "num_layers": d.layers,
        "hidden_size": d.hidden,
        "ffn_hidden_size": config["intermediate_size"],
        "num_attention_heads": d.heads,
        "num_query_groups": d.groups,
        "group_query_attention": d.groups != d.heads,
        "kv_channels": d.head_dim,
        "tensor_model_parallel_size": layout.tp,
        "pipeline_model_parallel_size": layout.pp,
        "virtual_pipeline_model_parallel_size": layout.vpp if layout.vpp > 1 else None,
        "expert_model_parallel_size": layout.ep,
        "padded_vocab_size": rows,
        "vocab_size": None,
        "make_vocab_size_divisible_by": 128,
        "untie_embeddings_and_output_weights": not d.tied,
        "layernorm_epsilon": 1e-6,
        "rank": 0,
        "lr": 1e-5,
        "decoder_first_pipeline_num_layers": None,
        "decoder_last_pipeline_num_layers": None,
    }
    if d.moe:
        values.update(
            num_experts=d.experts,
            moe_ffn_hidden_size=config["moe_intermediate_size"],
            expert_tensor_parallel_size=layout.etp,
            moe_grouped_gemm=layout.grouped_experts,
        )
    if layout.stages:
        values["decoder_first_pipeline_num_layers"] = layout.stages[0]
        values["decoder_last_pipeline_num_layers"] = layout.stages[-1]
    return values


def namespace_args(values: dict[str, Any]) -> argparse.Namespace:
    enums = _enums()
    return argparse.Namespace(
        **values,
        params_dtype=torch.bfloat16,
        model_type=enums["ModelType"].encoder_or_decoder,
        attention_backend=enums["AttnBackend"].auto,
        exit_signal=signal.SIGTERM,
    )


def omegaconf_args(values: dict[str, Any]) -> Any:
    """RLinf's flavour (formats.md §3.1, §9): its YAML as a DictConfig, with its duplicate keys."""
    from omegaconf import OmegaConf

    rlinf = dict(values)
    rlinf["share_embeddings_and_output_weights"] = not values["untie_embeddings_and_output_weights"]
    rlinf["params_dtype"] = "${torch.dtype:bfloat16}"
    rlinf["norm_epsilon"] = 1e-5
    rlinf["num_layers_in_first_pipeline_stage"] = rlinf.pop("decoder_first_pipeline_num_layers")
    rlinf["num_layers_in_last_pipeline_stage"] = rlinf.pop("decoder_last_pipeline_num_layers")
    rlinf["decoder_first_pipeline_num_layers"] = None
    rlinf["decoder_last_pipeline_num_layers"] = None
    rlinf["pipeline_stages"] = [1, 2]
    if "num_experts" in rlinf:
        rlinf["num_moe_experts"] = rlinf["num_experts"]
        rlinf["moe_grouped_gemm"] = "te" if rlinf["moe_grouped_gemm"] else None
        if rlinf["expert_tensor_parallel_size"] == rlinf["tensor_model_parallel_size"]:
            rlinf["expert_tensor_parallel_size"] = None
    config = OmegaConf.create(rlinf)
    config.model_type = _enums()["ModelType"].encoder_or_decoder
    return config


def file_extras(layout: MegatronLayout) -> dict[str, Any]:
    enums = _enums()
    extras: dict[str, Any] = {
        "checkpoint_version": 3.0,
        "iteration": layout.step,
        "optimizer": {
            "optimizer": {"param_groups": [{"lr": 1e-5, "weight_decay": 0.0}]},
            "grad_scaler": None,
        },
        "opt_param_scheduler": {"max_lr": 1e-5, "num_steps": layout.step},
        "rng_state": [
            {
                "random_rng_state": random.Random(0).getstate(),
                "np_rng_state": np.random.RandomState(0).get_state(),
                "torch_rng_state": torch.get_rng_state(),
                "rng_tracker_states": {},
            }
        ],
        "num_floating_point_operations_so_far": 0,
    }
    if layout.args == "omegaconf":  # core 0.13 (RLinf's pin) always writes the rerun state
        extras["rerun_state_machine"] = {
            "mode": enums["RerunMode"].DISABLED,
            "sharded": {
                "state": enums["RerunState"].NOT_RUNNING_YET,
                "error_injector_checkpoint": {"injected_error_type": enums["RerunDiagnostic"].CORRECT_RESULT},
            },
        }
    return extras
