"""Prior authorization by Da Vinci PAS (request, decision) and DTR (questionnaire)."""
