"""``python -m hpo_trainer.cli``: the same as the ``hpo-trainer`` command."""

import sys

from hpo_trainer.cli import main

sys.exit(main())
