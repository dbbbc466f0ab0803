"""BiomedParse v2 (``reference-v2``): the released 371M-parameter model, rebuilt from fveseg modules.

Load the user's own ``biomedparse_v2.ckpt`` with `load_reference_v2`, convert it once with
`convert_checkpoint`, and run the reference pre/post-processing from `fveseg.model.reference_v2.pipeline`.
Equivalence with the public code is tested against the fixture in ``shared/reference-v2``.
"""

from fveseg.model.reference_v2.build import NAME, build_reference_v2
from fveseg.model.reference_v2.clip_text import ClipTextTower, ReferenceText
from fveseg.model.reference_v2.loading import convert_checkpoint, load_official_state_dict, load_reference_v2
from fveseg.model.reference_v2.model import LICENCE_NOTICE, ReferenceV2
from fveseg.model.reference_v2.tokenizer import ClipTokenizer

__all__ = [
    "NAME",
    "ReferenceV2",
    "ReferenceText",
    "ClipTextTower",
    "ClipTokenizer",
    "LICENCE_NOTICE",
    "build_reference_v2",
    "load_reference_v2",
    "load_official_state_dict",
    "convert_checkpoint",
]
