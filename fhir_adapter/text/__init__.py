"""Reading clinical text: the ConText engine, its vocabulary, the whole-note document model
and scope rules, and each case's text index.

A room of its own between the case and the rules: `vocabulary` loads what the pack's
`mappings/text/` files say, `engine` finds and classifies mentions in sentences,
`document` splits a whole note into sections with roles and copied blocks, `scope` rules
out what belongs to another session, another organ or was not done today, and `index`
turns a case's narrative (notes, reports, attachments) into the evidence the rules read.
Nothing here imports `rules`.
"""
