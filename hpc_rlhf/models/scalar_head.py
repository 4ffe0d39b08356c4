"""A scalar head on any decoder family: the value model and the reward model of a family for which
transformers has no sequence-classification class (Granite, Cohere, OLMoE, Gemma 4, Llama 4, ...).

    cls = classifier_class(conf)            # AutoModelForSequenceClassification, or this module's class
    model = cls.from_pretrained(path, config=conf)   # or cls.from_config(conf)
    model = load_scalar_model(path)         # a folder train-rm wrote, outside hpc-rlhf's runs

Where transformers has the class (llama, qwen2, mistral, gpt_neox, phi3, gemma, gpt2, ...), it is used as it
is. Elsewhere the class is made here: the family's base model (`AutoModel`, under the family's
`base_model_prefix`) plus a bias-free `score` linear layer of one output, built on transformers'
`GenericForSequenceClassification` (the mixin behind LlamaForSequenceClassification and most others). So
its weights have the same names as every transformers classifier (`model.*`, `score.weight`), its
forward reads the last non-pad token as they do, and `save_pretrained` writes an ordinary folder
(config.json with `architectures: ["GraniteForSequenceClassification"]`, model.safetensors). Such a
folder loads back with `load_scalar_model` (or `build_reward`, through model.reward_path); plain
`AutoModel.from_pretrained(folder)` loads its backbone alone.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GenericForSequenceClassification
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

_MADE: dict[type, type] = {}  # config class -> the scalar-head class made for it (one class per family)


def has_native_classifier(model_type: str) -> bool:
    """transformers has a sequence-classification class for `model_type`."""
    return model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES


def can_score(model_type: str) -> bool:
    """A value or reward model can be made for `model_type`: a native classifier, or a base model to put
    the scalar head on."""
    return has_native_classifier(model_type) or model_type in MODEL_MAPPING_NAMES


def _pretrained_base(conf: PretrainedConfig) -> type:
    """The family's `*PreTrainedModel` class (weight init, attention backends), taken from its causal LM,
    else from its base model."""
    try:
        owner = MODEL_FOR_CAUSAL_LM_MAPPING[type(conf)]
    except KeyError:
        from transformers import AutoModel

        owner = AutoModel._model_mapping[type(conf)]
    for base in owner.__mro__[1:]:
        if issubclass(base, PreTrainedModel) and base.__module__ == owner.__module__:
            return base
    raise TypeError(f"no *PreTrainedModel class found for {type(conf).__name__}")


def _from_config(cls: type, conf: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
    return cls._from_config(conf, **kwargs)


def scalar_head_class(conf: PretrainedConfig) -> type:
    """The made class for `conf`'s family: GenericForSequenceClassification on the family's PreTrainedModel."""
    made = _MADE.get(type(conf))
    if made is None:
        base = _pretrained_base(conf)
        name = base.__name__.replace("PreTrainedModel", "") + "ForSequenceClassification"
        attrs: dict[str, Any] = {
            "base_model_prefix": base.base_model_prefix,
            "__module__": __name__,
            "from_config": classmethod(_from_config),  # as AutoModelForSequenceClassification.from_config
        }
        made = type(name, (GenericForSequenceClassification, base), attrs)
        _MADE[type(conf)] = made
    return made


def classifier_class(conf: PretrainedConfig) -> Any:
    """AutoModelForSequenceClassification where transformers has the family's class (today's numbers), else
    the scalar-head class of `scalar_head_class`."""
    return AutoModelForSequenceClassification if has_native_classifier(conf.model_type) else scalar_head_class(conf)


def load_scalar_model(path: str, **kwargs: Any) -> PreTrainedModel:
    """A one-label classifier folder (a reward model from `train-rm`) of any family, for use outside a run."""
    conf = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k == "local_files_only"})
    return classifier_class(conf).from_pretrained(path, config=conf, **kwargs)
