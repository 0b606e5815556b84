"""Hypothesize: whatever turns a head's examples into a pattern program.

Chat backends (an OpenAI-compatible HTTP server, a local chat model), the offline program search,
and the prompt and reply formats they share.

Modules: ``base`` (the `HeadTask` / `Proposal` / `Hypothesizer` contract and `BackendError`),
``http_chat`` (`OpenAICompatible`, hardened HTTP), ``backends`` (`LocalChatModel`,
`ProgramSearch`, `make_backend`), ``search`` (`fit_program`), ``prompt`` (`build_prompt`,
`parse_reply`, `feedback_message`). The public names are re-exported by `attn_tools.automate`.
"""
