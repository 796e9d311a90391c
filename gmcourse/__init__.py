"""gmcourse: small, tested reference implementations for a course on deep generative models.

One module per chapter; every model follows the protocol in :mod:`gmcourse.protocol`
(``log_prob`` / ``sample`` / ``loss``).

========================  =========================================  =========
module                    what it holds                              chapter
========================  =========================================  =========
``protocol``              the model protocol every family follows    all
``utils``                 devices, seeds/generators, progress bars   all
``divergences``           entropy, KL, cross-entropy, NLL, MC error   2
``sampling``              Metropolis-Hastings, Gibbs, ULA, MALA, tau  3
``ising``                 the exactly solvable Ising data set        3
``toys``                  2D toy densities with exact log-densities  2, 3
``digits``                scikit-learn's 8x8 digits, fixed split     0
``grading``               the instructor's nbgrader pipeline         --
========================  =========================================  =========
"""

__version__ = "0.1.0"
