"""The Streamlit inference page (`make demo`): demo/app.py, with its logic in logic.py and engine.py."""
