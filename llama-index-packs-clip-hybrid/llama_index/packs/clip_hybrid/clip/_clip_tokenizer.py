"""clip's ``simple_tokenizer.py`` (``SimpleTokenizer``), run as this module.

See _clip_model.py. The file's ``default_bpe()`` looks for the vocabulary beside the
module, which here is not clip's folder: :func:`.clip_package.clip_tokenizer` passes
the path of clip's vocabulary.
"""

from .package import run_clip_file

run_clip_file("simple_tokenizer.py", globals())
