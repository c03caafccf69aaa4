#include "ficbroker/util/error.hpp"

#include <string>

namespace ficbroker {
namespace {

// boost::system::error_category has a protected non-virtual destructor by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "ficbroker"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "ok";
      case errc::bad_upstream_response:
        return "upstream answered with an unusable HTTP response";
      case errc::upstream_timeout:
        return "upstream did not answer in time";
      case errc::too_large:
        return "message larger than the limit";
    }
    return "unknown ficbroker error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& ficbroker_category() noexcept {
  static const Category category;
  return category;
}

}  // namespace ficbroker
