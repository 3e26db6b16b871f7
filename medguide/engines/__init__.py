"""MONAI engines, inferers and batch preparation of the medguide methods."""

from medguide.engines.batches import AugmentedBatch
from medguide.engines.checkpoints import CheckpointLoader, NetworkSettingsSaver, save_network_settings, trained_settings
from medguide.engines.distributed import ddp_process_group, finish_distributed
from medguide.engines.dmg import (
    BagCollate,
    LatentCache,
    PartsLoader,
    TaskBatch,
    cache_latents,
    check_seed_folders,
    evaluate_guidance,
    evaluate_seeds,
    evaluating,
    guidance_rows,
    load_parts,
    lower_is_better,
    predict_rows,
)
from medguide.engines.inferers import MirroredInferer
from medguide.engines.iterations import TrainingIteration
from medguide.engines.known_warnings import show_known_warnings_once
from medguide.engines.localization import LocalizationWriter
from medguide.engines.maml import ModalityBatch, SubsetEvaluator, batch_modalities, predict_subsets
from medguide.engines.memory import MemoryCheck, available_memory, estimate_peak_memory
from medguide.engines.octcoda import DISTILLATION_TERMS, OCTCoDAIteration, distillation_terms
from medguide.engines.precision import (
    PRECISIONS,
    AutocastCall,
    EnginePrecision,
    autocast,
    engine_precision,
    resolve_precision,
)
from medguide.engines.predictions import (
    ClassProbabilityWriter,
    ConceptInferer,
    ConceptWriter,
    KeepingInferer,
    MapInferer,
)
from medguide.engines.progress import EpochProgress
from medguide.engines.workflows import Evaluator, Trainer, trained_network
from medguide.engines.xattn import (
    LOCALIZATION_COLUMNS,
    REPORT_TERMS,
    ReportGuidedIteration,
    evaluate_localization,
    localization_scores,
    report_terms,
)

__all__ = [
    "LOCALIZATION_COLUMNS",
    "REPORT_TERMS",
    "evaluate_localization",
    "localization_scores",
    "check_seed_folders",
    "ReportGuidedIteration",
    "report_terms",
    "TrainingIteration",
    "DISTILLATION_TERMS",
    "OCTCoDAIteration",
    "distillation_terms",
    "PRECISIONS",
    "AugmentedBatch",
    "AutocastCall",
    "BagCollate",
    "CheckpointLoader",
    "ClassProbabilityWriter",
    "ConceptInferer",
    "ConceptWriter",
    "EnginePrecision",
    "EpochProgress",
    "KeepingInferer",
    "LatentCache",
    "LocalizationWriter",
    "MapInferer",
    "Evaluator",
    "MemoryCheck",
    "MirroredInferer",
    "NetworkSettingsSaver",
    "PartsLoader",
    "ModalityBatch",
    "SubsetEvaluator",
    "TaskBatch",
    "Trainer",
    "autocast",
    "available_memory",
    "batch_modalities",
    "cache_latents",
    "ddp_process_group",
    "engine_precision",
    "evaluate_guidance",
    "evaluate_seeds",
    "evaluating",
    "estimate_peak_memory",
    "finish_distributed",
    "guidance_rows",
    "load_parts",
    "lower_is_better",
    "predict_rows",
    "predict_subsets",
    "resolve_precision",
    "save_network_settings",
    "show_known_warnings_once",
    "trained_network",
    "trained_settings",
]
