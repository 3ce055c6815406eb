"""How we measure: the consumer-side probe, fault experiments, the seed's use cases as runnable
scenarios, timelines, sequence charts, verdicts and the statistics every figure uses."""
