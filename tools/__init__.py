"""LangChain tools that the agents call."""
