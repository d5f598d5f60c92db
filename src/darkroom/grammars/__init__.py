"""Request grammars: each compiles request text to one EditPlan."""
