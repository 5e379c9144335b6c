"""The code a registered version runs when it is loaded (MLflow "models from code"): it sets the T2V pyfunc.

`t2v register` logs this file as the version's model, with the project's Python files as its code paths; loading
the version runs this file and imports components.register.pyfunc from them. Never imported by the project itself.
"""

import mlflow.models

from components.register.pyfunc import T2VModel

mlflow.models.set_model(T2VModel())
