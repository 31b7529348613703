"""MLflow "models from code" entry: logged with the model, run when the model loads.

Keeps the registered artifact free of pickled Python objects.
"""

import mlflow

from finsent.serving import SentimentModel

mlflow.models.set_model(SentimentModel())
