"""A model version's system-prompt template, put in front of a chat it answers.

The template is the version's (`models[].system_prompt_template_version`, text from `system_prompts`), so a
shadow with its own template gets its own, not the primary's: the flow keeps the request without a
template, gives the primary its template, and the mirror gives the shadow its one. The template comes
first; a client's own system message stays after it (the client cannot remove the operator's template, and
its instructions still reach the model). Completions (a raw prompt) get none: there is no system role.
"""

from __future__ import annotations

from deployments.llm import ChatMessage, GenerateRequest


def with_system_prompt(request: GenerateRequest, system_prompt: str | None) -> GenerateRequest:
    """`request` with the template as its first message (unchanged without a template or messages)."""
    if system_prompt is None or request.messages is None:
        return request
    messages = [ChatMessage(role="system", content=system_prompt), *request.messages]
    return request.model_copy(update={"messages": messages})
