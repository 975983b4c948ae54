"""Raw QA records -> LLaMA-Factory datasets registered in dataset_info.json."""
