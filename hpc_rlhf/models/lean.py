"""The lean decoder: Llama/Qwen2/Mistral forward passes as plain torch calls on the model's own
parameters, without the Hugging Face module overhead (models/forward.py and models/generate.py use it).

    lean = Lean.of(model)          # None when the model is not of a lean family: use its HF forward
    h = lean.hidden(input_ids, position_ids, key_mask, q_from)       # final-norm hidden states
    h = lean.cached_step(ids, col, cos, sin, cache, fused, mask, last_only)   # one decode step

Bit-for-bit the arithmetic the reference run was pinned with; tests/models/test_lean_forward.py
checks it against the Hugging Face modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

_LEAN_FAMILIES = ("llama", "qwen2", "mistral")
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def _lean_ok(model: torch.nn.Module) -> bool:
    """Whether `model` (a *ForCausalLM / *ForSequenceClassification) can run on the lean path:
    a Llama, Qwen2 or Mistral decoder with SiLU MLP, RMSNorm, full attention (no sliding window in use)
    and a static RoPE table. Any other family runs on its Hugging Face forward."""
    cached = getattr(model, "_hpc_lean_ok", None)
    if cached is not None:
        return cached
    c = model.config
    rope = getattr(c, "rope_parameters", None) or {}
    ok = (
        c.model_type in _LEAN_FAMILIES
        and getattr(c, "hidden_act", None) == "silu"
        and rope.get("rope_type", "default") in _STATIC_ROPE
        and all(t == "full_attention" for t in (getattr(c, "layer_types", None) or ["full_attention"]))
        and (getattr(c, "sliding_window", None) is None or not getattr(c, "use_sliding_window", True))
        and getattr(model, getattr(model, "base_model_prefix", "model"), None) is not None
        and hasattr(getattr(model, model.base_model_prefix), "rotary_emb")
    )
    model._hpc_lean_ok = ok
    return ok


def _linear(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    return F.linear(x, lin.weight, lin.bias)


class Lean:
    """The decoder stack of a Llama/Qwen2 model as plain torch calls on the model's own parameters
    (no copies: optimizer steps and load_state_dict are seen at once; autograd flows into them).

    Same math as the Hugging Face modules (RMSNorm in fp32, RoPE cos/sin from position ids,
    softmax(QK^T/sqrt(d))V, SwiGLU), with two savings a generic forward cannot make:
    - the last layer runs queries, attention output and MLP only for the columns whose output is
      read (the response columns, or the last token for a score), keys/values for all;
    - columns after the last one read are not computed at all.
    """

    def __init__(self, model: torch.nn.Module):
        base = getattr(model, model.base_model_prefix)
        c = model.config
        self.base, self.config = base, c
        self.layers = list(base.layers)
        self.n_heads = c.num_attention_heads
        self.n_kv = getattr(c, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.n_heads
        self.eps = float(c.rms_norm_eps)
        self.rope = base.rotary_emb
        self.checkpoint = bool(getattr(model, "_hpc_checkpoint_layers", False))  # forward.checkpoint_layers()

    @staticmethod
    def of(model: torch.nn.Module) -> Lean | None:
        if not _lean_ok(model):
            return None
        lean = model.__dict__.get("_hpc_lean")
        if lean is None:
            lean = Lean(model)
            model.__dict__["_hpc_lean"] = lean
        return lean

    def norm(self, x: torch.Tensor, mod: torch.nn.Module) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), mod.weight, self.eps)

    def cos_sin(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) cos and sin of positions `pos` (B, T), as LlamaRotaryEmbedding computes them."""
        freqs = pos[..., None].float() * self.rope.inv_freq.to(device=pos.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = self.rope.attention_scaling
        return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def attend(self, q, k, v, mask, causal: bool) -> torch.Tensor:
        """q (B, H, Tq, D), k/v (B, Hkv, Tk, D) -> (B, Tq, H*D)."""
        gqa = self.n_kv != self.n_heads
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=gqa)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    def hidden(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        key_mask: torch.Tensor | None,
        q_from: int,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T - q_from, d) of columns q_from .. T-1 of `input_ids` (B, T).

        key_mask (B, T) bool marks real tokens (None: no padding); attention is causal, a padded
        column attends to itself only (its output is never read)."""
        b, t = input_ids.shape
        emb = self.base.embed_tokens
        x = F.embedding(input_ids, emb.weight, emb.padding_idx)
        cos, sin = self.cos_sin(position_ids, x.dtype)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = None
        if key_mask is not None:
            causal = torch.ones((t, t), dtype=torch.bool, device=x.device).tril_()
            mask = (causal & key_mask[:, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)
            mask = mask.unsqueeze(1)  # (B, 1, T, T)
        h, hd, nkv = self.n_heads, self.head_dim, self.n_kv
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i != last or q_from == 0:  # every column
                if self.checkpoint and i != last and torch.is_grad_enabled():  # recomputed in backward
                    x = checkpoint(self._full_layer, layer, x, cos, sin, mask, use_reentrant=False)
                else:
                    x = self._full_layer(layer, x, cos, sin, mask)
                continue
            # the last layer: keys/values of every column, the rest only for the columns that are read
            att = layer.self_attn
            y = self.norm(x, layer.input_layernorm)
            k = _linear(y, att.k_proj).view(b, t, nkv, hd).transpose(1, 2)
            v = _linear(y, att.v_proj).view(b, t, nkv, hd).transpose(1, 2)
            k = self.rotate(k, cos, sin)
            x, y = x[:, q_from:], y[:, q_from:]
            qc, qs = cos[:, :, q_from:], sin[:, :, q_from:]
            if mask is not None:
                m = mask[:, :, q_from:]
            else:
                m = torch.ones((t, t), dtype=torch.bool, device=x.device).tril_()[q_from:]
            q = _linear(y, att.q_proj).view(b, t - q_from, h, hd).transpose(1, 2)
            q = self.rotate(q, qc, qs)
            a = self.attend(q, k, v, m, causal=False)
            x = x + _linear(a, att.o_proj)
            mlp = layer.mlp
            y = self.norm(x, layer.post_attention_layernorm)
            x = x + _linear(F.silu(_linear(y, mlp.gate_proj)) * _linear(y, mlp.up_proj), mlp.down_proj)
        if q_from > 0 and not self.layers:
            x = x[:, q_from:]
        return self.norm(x, self.base.norm)

    def _full_layer(self, layer, x, cos, sin, mask) -> torch.Tensor:
        """One decoder layer over every column (hidden()'s layers but a last one that reads only some columns)."""
        b, t, _ = x.shape
        h, hd, nkv = self.n_heads, self.head_dim, self.n_kv
        att = layer.self_attn
        y = self.norm(x, layer.input_layernorm)
        k = _linear(y, att.k_proj).view(b, t, nkv, hd).transpose(1, 2)
        v = _linear(y, att.v_proj).view(b, t, nkv, hd).transpose(1, 2)
        k = self.rotate(k, cos, sin)
        q = _linear(y, att.q_proj).view(b, t, h, hd).transpose(1, 2)
        q = self.rotate(q, cos, sin)
        a = self.attend(q, k, v, mask, causal=True)
        x = x + _linear(a, att.o_proj)
        mlp = layer.mlp
        y = self.norm(x, layer.post_attention_layernorm)
        return x + _linear(F.silu(_linear(y, mlp.gate_proj)) * _linear(y, mlp.up_proj), mlp.down_proj)

    # -- generation: prefill + one-token steps over a preallocated KV cache (no autograd) ----------------
    @torch.no_grad()
    def fused_weights(self) -> list[tuple]:
        """Per layer: (W_qkv, b_qkv, W_gate_up) concatenated once for a whole generate call."""
        out = []
        for layer in self.layers:
            att, mlp = layer.self_attn, layer.mlp
            w = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
            bias = None
            if att.q_proj.bias is not None:
                bias = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
            gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            gu_b = None if mlp.gate_proj.bias is None else torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias])
            out.append((w, bias, gu, gu_b))
        return out

    @torch.no_grad()
    def cached_step(
        self,
        ids: torch.Tensor,
        col: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        fused: list[tuple],
        mask: torch.Tensor | None,
        last_only: bool,
    ) -> torch.Tensor:
        """Run columns col .. col+T-1 (ids (B, T)), storing their keys/values in `cache` and attending
        to cache columns 0 .. col+T-1. cos/sin: (B, 1, T, D). mask: (B, 1, T, col+T) bool or None
        (None = causal over the new columns, all cached columns visible). Returns the final-norm hidden
        state of the last column (B, d) when last_only, else of all T columns."""
        b, t = ids.shape
        h, hd, nkv = self.n_heads, self.head_dim, self.n_kv
        emb = self.base.embed_tokens
        x = F.embedding(ids, emb.weight)
        end = col + t
        nq, nk = h * hd, nkv * hd
        last = len(self.layers) - 1
        for i, (layer, (w, bias, gu, gu_b)) in enumerate(zip(self.layers, fused)):
            y = self.norm(x, layer.input_layernorm)
            qkv = F.linear(y, w, bias)
            kc, vc = cache[i]
            vc[:, :, col:end] = qkv[..., nq + nk :].view(b, t, nkv, hd).transpose(1, 2)
            m, causal = mask, t > 1 and mask is None
            if i == last and last_only and t > 1:
                k = qkv[..., nq : nq + nk].view(b, t, nkv, hd).transpose(1, 2)
                kc[:, :, col:end] = self.rotate(k, cos, sin)
                x, q = x[:, -1:], qkv[:, -1:, :nq]
                m = None if mask is None else mask[:, :, -1:]
                causal = False
                q = self.rotate(q.reshape(b, 1, h, hd).transpose(1, 2), cos[:, :, -1:], sin[:, :, -1:])
            else:  # q and k rotated as one tensor of h + nkv heads (the same arithmetic, half the calls)
                qk = self.rotate(qkv[..., : nq + nk].view(b, t, h + nkv, hd).transpose(1, 2), cos, sin)
                q = qk[:, :h]
                kc[:, :, col:end] = qk[:, h:]
            a = self.attend(q, kc[:, :, :end], vc[:, :, :end], m, causal=causal)
            x = x + _linear(a, layer.self_attn.o_proj)
            y = self.norm(x, layer.post_attention_layernorm)
            g, u = F.linear(y, gu, gu_b).chunk(2, dim=-1)
            x = x + _linear(F.silu(g) * u, layer.mlp.down_proj)
        x = self.norm(x, self.base.norm)
        return x[:, -1] if last_only else x
