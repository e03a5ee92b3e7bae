"""How a run is judged: AUC, pAUC and the official score, decision thresholds, Table 2
(``metrics``). Knows nothing of models; loads without torch."""
