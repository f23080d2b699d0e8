// Fused TKS loss for the CPU: loss and dL/dlogits in one forward pass over
// [T, B, C], threads over samples (see csrc/tks_math.h for the math).
#pragma once

#include "../tks_math.h"

namespace tks {
namespace cpu {

// Fills prob.terms ([2, B]: ce_b, soft_b), prob.loss (L), prob.parts (ce, soft) and, when
// prob.grad is set, the gradient of L = (1 - lam) ce + lam soft, ce = sum_b ce_b and
// soft = sum_b soft_b, with respect to the logits.
// Labels must be in [0, C) and T <= loss::kMaxSteps (the caller checks).
void tks_loss_forward(const loss::Problem& prob);

}  // namespace cpu
}  // namespace tks
