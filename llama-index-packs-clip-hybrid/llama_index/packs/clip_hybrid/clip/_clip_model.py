"""clip's ``model.py`` (``CLIP``, ``build_model``, ...), run as this module.

``import clip.model`` would first run ``clip/__init__.py``, and with it torchvision and
``torch._dynamo`` (see clip_package.py). This module runs the installed file's code
instead: the same classes and functions, defined here.
"""

from .package import run_clip_file

run_clip_file("model.py", globals())
