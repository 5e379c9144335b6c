"""The code a registered version runs when it is loaded (MLflow "models from code"): it sets the T2V pyfunc.

`t2v register` logs this file as the version's model, with the `model` package as its code path; loading the version
runs this file, which imports model.inference.pyfunc from there. Never imported by the project itself.
"""

import mlflow.models

from model.inference.pyfunc import T2VModel

mlflow.models.set_model(T2VModel())
