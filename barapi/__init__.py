"""barapi: black-box adversarial reprogramming of prediction APIs and local models.

Importing barapi loads no model framework: the BAR engine needs only probabilities.
"""

from barapi.config import RunConfig, make_config

__version__ = "0.1.0"

__all__ = ["RunConfig", "__version__", "make_config"]
