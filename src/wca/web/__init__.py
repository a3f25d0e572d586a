"""The web page of ``wca serve``: a Gradio app over the classifier and its explanations.

``inputs`` checks what a visitor sends, ``service`` holds the model and answers, ``app`` is the
page (the only module that imports Gradio, the optional extra ``wca[web]``).
"""
