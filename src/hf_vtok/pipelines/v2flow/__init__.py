from .language_model import V2FlowVocabulary, extend_vocabulary
from .pipeline_v2flow import V2FlowPipeline
from .pipeline_v2flow_llama import V2FlowLlamaPipeline

__all__ = ["V2FlowLlamaPipeline", "V2FlowPipeline", "V2FlowVocabulary", "extend_vocabulary"]
