"""Reading clinical text: the ConText engine, its vocabulary, and each case's text index.

A room of its own between the case and the rules: `vocabulary` loads what the pack's
`mappings/text/` files say, `engine` finds and classifies mentions in sentences, and
`index` turns a case's narrative (notes, reports, attachments) into the evidence the
rules read. Nothing here imports `rules`.
"""
