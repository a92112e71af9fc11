"""Reading a study file: the recipe and train-study documents, ``--set`` overrides with their error blame, and the
loader that train, ablation and search studies share."""

from crmlab.registry import lazy_exports

__all__ = [
    "MONITORS",
    "OPERATIONAL",
    "Recipe",
    "Schedule",
    "Split",
    "Stage",
    "Strict",
    "StudyDoc",
    "TrainStudy",
    "blame_overrides",
    "check_assembles",
    "check_splits",
    "graph_document",
    "input_length",
    "load_data",
    "load_study_data",
    "load_study_file",
    "load_train_study",
    "parse_recipe",
    "read_study",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MONITORS": "_recipe",
        "OPERATIONAL": "_recipe",
        "Recipe": "_recipe",
        "Schedule": "_recipe",
        "Split": "_recipe",
        "Stage": "_recipe",
        "Strict": "_recipe",
        "StudyDoc": "_recipe",
        "TrainStudy": "_recipe",
        "blame_overrides": "_overrides",
        "check_assembles": "_loader",
        "check_splits": "_loader",
        "graph_document": "_loader",
        "input_length": "_loader",
        "load_data": "_loader",
        "load_study_data": "_loader",
        "load_study_file": "_loader",
        "load_train_study": "_loader",
        "parse_recipe": "_recipe",
        "read_study": "_loader",
    },
)
