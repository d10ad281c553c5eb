"""Featurization-shaped loops: iterate over named documents and their pages.

Run once:   python documents.py
Then:       flor.dataframe("n_chars", "source_kind", "headings")
The document loop iterates over strings, so the frame carries document_value.
"""
import flordb as flor

corpus = {
    "opinion": ["SYLLABUS\nThe court held", "page two text", "page three"],
    "dissent": ["DISSENT\nI respectfully dissent", "more"],
}

for doc in flor.loop("document", sorted(corpus)):
    for page in flor.loop("page", range(min(len(corpus[doc]), 50))):
        text = corpus[doc][page]
        flor.log("doc_page", f"{doc}:{page}")
        flor.log("n_chars", len(text))
        flor.log("source_kind", "ocr" if page % 2 else "txt")
        flor.log("headings", [line for line in text.splitlines() if line.isupper()])
