"""The Eliza agent's service layer: proposals, the learned decision model, and the decision ledger in Redis.

**Features.** Every field of a proposal becomes named features (:class:`FeatureSpace`): each criterion enters
centred (``x - 0.5``, so a missing one is neutral); ``amount_xmr`` as a robustly scaled log and three quartile
hinges; ``category`` one-hot over the categories seen in outcomes (an unseen one is neutral); the words of the
title and description that recur in past proposals; and the LLM's verdict (``llm_verdict``) when it was asked.
New features start at weight 0 and move only by learning from outcomes. The seed's basic rule
(:data:`PRIOR_WEIGHTS`) is the starting point: support and alignment count for, risk and treasury impact against.

**Model.** A mixture of experts (:data:`EXPERTS`): logistic ones on the criteria alone, main effects, words,
category interactions, products of criteria, two that forget old outcomes (half-life, default 60) so that a rule
that changes is followed (``main_recent`` under an L1 penalty, so it relearns from the few outcomes since a change
with the few features they support), and ``trees`` (main effects plus boosted depth-2 trees on their residual, for
thresholds and interactions). The mixture weights are the experts' posterior given their prequential log-loss (the
score each expert gave a proposal when it was decided, before its outcome was known). ``p`` is the predicted
probability of success; approve when ``p >= 0.5 + defer_margin``, reject when ``p <= 0.5 - defer_margin``, defer in
between (``defer_margin`` is 0 by default: every proposal is decided, and the rationale says when it is a close
call).

**Learning.** Every recorded outcome is a labelled example. Self-improvement fits each expert with scikit-learn's
``SGDClassifier`` (log-loss, L2; L1 for ``main_recent``), warm-started from its stored weights, on features scaled
to unit variance, with the ``adaptive`` schedule starting at the configured learning rate (0.01 by default, as in
the seed). Nothing is incremented by hand: the weights move only by the gradient of recorded outcomes.

**Accuracy and calibration** (:func:`metrics_of`). A decision with an outcome is correct when it approved a
success or rejected a failure; a deferral is never correct (otherwise deferring everything would look perfect).
Brier score, log-loss, a reliability table and the learning curve are computed from the same records.

**Ledger.** One Redis hash per agent holds every decision (features, signals, expert scores, score, rationale,
sources and, once fed back, the outcome). The model (format 2; format 1 migrates on load), its versions and the
LLM verdict cache are under the agent's keys.

**Modules.** :mod:`~xmrt.eliza.proposals` (input records), :mod:`~xmrt.eliza.features` (:class:`FeatureSpace`),
:mod:`~xmrt.eliza.model` (:class:`DecisionModel`), :mod:`~xmrt.eliza.mixture` (its weights),
:mod:`~xmrt.eliza.metrics`, :mod:`~xmrt.eliza.ledger` (:class:`DecisionLedger`);
their public names are re-exported here. Beside them: :mod:`~xmrt.eliza.memory` (agent memory) and
:mod:`~xmrt.eliza.runner` (the system cycle behind ``xmrt run``).
"""

from __future__ import annotations

from xmrt.eliza.explain import confidence_of, rationale  # noqa: F401
from xmrt.eliza.features import (  # noqa: F401
    AMOUNT_FEATURES,
    MAX_WORDS,
    PAIR_CRITERIA,
    STOPWORDS,
    VOCABULARY_SIZE,
    Example,
    FeatureSpace,
    proposal_signals,
    text_words,
)
from xmrt.eliza.ledger import (  # noqa: F401
    DecisionLedger,
    DuplicateFeedback,
    UnknownDecision,
    agent_key_base,
    list_agents,
    validate_agent_id,
)
from xmrt.eliza.metrics import (  # noqa: F401
    decide_from_probability,
    history_point,
    is_correct,
    metrics_of,
    reliability,
)
from xmrt.eliza.model import (  # noqa: F401
    EXPERTS,
    INTERACTION_SHRINK,
    PRIOR_WEIGHTS,
    DecisionModel,
    Expert,
)
from xmrt.eliza.proposals import (  # noqa: F401
    DECISIONS,
    MAX_CRITERIA,
    MAX_TEXT,
    RESERVED_MARKS,
    LineError,
    Outcome,
    Proposal,
    outcome_from_dict,
    parse_jsonl,
    proposal_from_dict,
)
