"""The review loop's pure parts: embedding, clustering, sampling, agreement and the judge hook."""
