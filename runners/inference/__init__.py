"""Using a trained model: predictions, mutagenesis and saliency, motif scans, figures, the MLflow pyfunc model and the
model store."""

from crmlab.registry import lazy_exports

__all__ = [
    "Explanation",
    "Motif",
    "SequenceModel",
    "explain",
    "jaspar_motifs",
    "load_model",
    "log_folder",
    "log_sequence_model",
    "mutagenesis_path",
    "predict",
    "prediction_scatters",
    "pyplot",
    "register_model",
    "saturation_mutagenesis",
    "save_figure",
    "scan",
    "variant_bars",
    "write_explanation",
    "write_mutagenesis",
    "write_predictions",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SequenceModel": "_mlflow_model",
        "prediction_scatters": "_figures",
        "pyplot": "_figures",
        "save_figure": "_figures",
        "Explanation": "_explain",
        "Motif": "_motifs",
        "explain": "_explain",
        "jaspar_motifs": "_motifs",
        "load_model": "_predict",
        "log_folder": "_explain",
        "log_sequence_model": "_mlflow_model",
        "mutagenesis_path": "_predict",
        "predict": "_predict",
        "register_model": "_mlflow_model",
        "saturation_mutagenesis": "_predict",
        "scan": "_motifs",
        "variant_bars": "_explain_plots",
        "write_explanation": "_explain",
        "write_mutagenesis": "_predict",
        "write_predictions": "_predict",
    },
)
