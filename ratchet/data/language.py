"""Language identification with py3langid (langid.py's model, bundled in the wheel, offline).

A record is out only when the detector is confident (normalised probability at
least `min_confidence`) that it is in a language not on the list: short or mixed
texts (a Latin motto with its English translation, code) are too uncertain to
throw away.
"""
from __future__ import annotations


class LanguageFilter:
    def __init__(self, languages: list[str], min_confidence: float):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.languages, self.min_confidence = set(languages), min_confidence

    def check(self, text: str) -> tuple[str, float] | None:
        """(language, confidence) when the text is confidently in a language not allowed, else None."""
        lang, p = self.identifier.classify(text)
        if lang not in self.languages and p >= self.min_confidence:
            return lang, float(p)
        return None
